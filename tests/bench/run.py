"""`make bench`: probe sqlprobe the way Prometheus does and measure it from outside its process.

python -m tests.bench.run [--targets 200] [--servers 4] [--interval 5] [--duration 60]
python -m tests.bench.run --mode saturation [--concurrency 1,2,4,8,16,32,64] [--step 10] [--p99-bound-ms 50]
python -m tests.bench.run --compare before.json after.json
"""

import argparse
import asyncio
import datetime
import hashlib
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvloop
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.client import Connection, Outcome, Probes, probe_request
from tests.bench.fleet import QUERIES_PER_PROBE, Exporter, bench_setup
from tests.bench.procstat import Snapshot, rss_bytes

RESULTS_DIRECTORY = Path("bench-results")
# Seconds the exporter is watched before the first probe: its CPU when nobody asks anything.
IDLE_SECONDS = 3


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bench (or compare two runs) as the command line asks."""
    args = _parser().parse_args(argv)
    if args.compare:
        compare(*(json.loads(Path(path).read_text()) for path in args.compare))
        return
    started = datetime.datetime.now(datetime.UTC)
    config = {
        "mode": args.mode,
        "targets": args.targets,
        "servers": args.servers,
        "queries_per_probe": QUERIES_PER_PROBE,
        "interval_s": args.interval,
        "warmup_s": args.warmup if args.warmup is not None else args.interval,
        "duration_s": args.duration,
        "scrape_timeout_s": args.scrape_timeout,
        "max_in_flight": args.max_in_flight,
        "concurrency": args.concurrency,
        "step_s": args.step,
        "p99_bound_ms": args.p99_bound_ms,
        "exporter_args": args.exporter_arg,
    }
    print(f"bench: starting {args.servers} MariaDB servers, {args.targets} targets and sqlprobe ...", file=sys.stderr)
    with bench_setup(args.servers, args.targets, args.exporter_arg) as (running, fleet):
        database_pids = [server.process.pid for server in fleet if server.process is not None]
        time.sleep(1)  # let the freshly started exporter settle before taking its idle memory and CPU
        idle = Snapshot.take(running.process.pid, database_pids)
        time.sleep(IDLE_SECONDS)
        idle_window = idle.until(Snapshot.take(running.process.pid, database_pids))
        idle_rss = rss_bytes(running.process.pid)
        if args.mode == "open":
            results: dict[str, Any] = uvloop.run(open_loop(running, database_pids, config))
        else:
            results = uvloop.run(saturation(running, database_pids, config))
        rss = rss_bytes(running.process.pid)
        if args.floor:
            results.update(python_floor(running, database_pids, config))
            results["exporter_to_floor"] = _ours(results) / results["floor_cpu_us_per_query"]
        results["exporter_idle_cores"] = idle_window["exporter_cpu_s"] / idle_window["wall_s"]
        results["rss_idle_mib"] = idle_rss / 2**20
        results["rss_mib"] = rss / 2**20
        results["rss_per_target_kib"] = (rss - idle_rss) / args.targets / 1024
    report = {"started": started.isoformat(), "machine": machine(), "config": config, "results": results}
    print_table(report)
    path = Path(args.json) if args.json else RESULTS_DIRECTORY / f"{started:%Y%m%dT%H%M%SZ}-{args.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["open", "saturation"], default="open")
    parser.add_argument("--targets", type=int, default=200, help="targets, dealt round-robin over the servers")
    parser.add_argument("--servers", type=int, default=4, help="throwaway MariaDB servers")
    parser.add_argument("--interval", type=float, default=5, help="seconds between two probes of one target (open)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default: one interval)")
    parser.add_argument("--duration", type=float, default=60, help="seconds measured (open)")
    parser.add_argument("--scrape-timeout", type=float, default=10, help="X-Prometheus-Scrape-Timeout-Seconds")
    parser.add_argument("--max-in-flight", type=int, default=128, help="probes in flight at most (open)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(step) for step in text.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64],
        help="probes in flight per step, comma-separated (saturation)",
    )
    parser.add_argument("--step", type=float, default=10, help="seconds per concurrency step (saturation)")
    parser.add_argument("--p99-bound-ms", type=float, default=50, help="p99 above this ends saturation")
    parser.add_argument(
        "--exporter-arg",
        action="append",
        default=[],
        help="one more sqlprobe argument (repeatable; --exporter-arg=--max-threads=8)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then run the same queries on bare PyMySQL connections, on the same schedule (open) or back to back "
        "(saturation), and give sqlprobe's CPU per query as a multiple of that",
    )
    parser.add_argument("--json", help="where to write the figures (default bench-results/<time>-<mode>.json)")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print B/A for two runs and exit")
    return parser


async def open_loop(running: Exporter, database_pids: Sequence[int], config: Mapping[str, Any]) -> dict[str, Any]:
    """Every target once per interval, start times spread evenly, at most ``max_in_flight`` at once."""
    requests = [probe_request(running.host, running.port, name, config["scrape_timeout_s"]) for name in running.targets]
    interval, warmup, duration = config["interval_s"], config["warmup_s"], config["duration_s"]
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    probers = [_probers(running, config) for _ in range(config["max_in_flight"])]
    lags: list[tuple[float, float]] = []  # (start, seconds the probe started after its slot)

    async def work(probes: Probes) -> None:
        while True:
            slot, request = await queue.get()
            lags.append((time.monotonic(), time.monotonic() - slot))
            await probes.probe(request)
            queue.task_done()

    workers = [asyncio.create_task(work(probes)) for probes in probers]
    begin = time.monotonic()
    window_start, window_end = begin + warmup, begin + warmup + duration
    spacing = interval / len(requests)
    snapshots: list[Snapshot] = []
    for slot_number in itertools.count():
        slot = begin + slot_number * spacing
        if slot >= window_end:
            break
        if not snapshots and slot >= window_start:
            await asyncio.sleep(window_start - time.monotonic())
            snapshots.append(Snapshot.take(running.process.pid, database_pids))
        if (delay := slot - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((slot, requests[slot_number % len(requests)]))
    await asyncio.sleep(window_end - time.monotonic())
    snapshots.append(Snapshot.take(running.process.pid, database_pids))
    print("bench: measured; letting probes in flight finish ...", file=sys.stderr)
    await queue.join()
    for worker in workers:
        worker.cancel()
    for probes in probers:
        probes.connection.close()
    outcomes = [o for p in probers for o in p.outcomes if window_start <= o.finished <= window_end]
    late = [lag for start, lag in lags if window_start <= start <= window_end]
    results = summarize(outcomes, snapshots[0].until(snapshots[1]))
    results["start_lag_p99_ms"] = percentile(late, 99) * 1000
    results["start_lag_max_ms"] = max(late, default=0) * 1000
    results["probes_expected"] = duration * len(requests) / interval
    results["loop_lag_max_ms"] = _own_metric(running, "sqlprobe_event_loop_lag_max_seconds") * 1000
    return results


def _own_metric(running: Exporter, name: str) -> float:
    """One sample of sqlprobe's own /metrics (its longest event-loop stall since start, say)."""
    with urllib.request.urlopen(f"http://{running.host}:{running.port}/metrics", timeout=10) as answer:
        for family in text_string_to_metric_families(answer.read().decode()):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
    return math.nan


async def saturation(running: Exporter, database_pids: Sequence[int], config: Mapping[str, Any]) -> dict[str, Any]:
    """Closed loop at rising concurrency; the best probes/s before p99 passes its bound or a probe fails."""
    requests = [probe_request(running.host, running.port, name, config["scrape_timeout_s"]) for name in running.targets]
    bound = config["p99_bound_ms"] / 1000
    cycle = itertools.cycle(requests)
    probers = [_probers(running, config) for _ in range(max(config["concurrency"]))]

    async def closed_loop(probes: Probes, deadline: float, take: Iterator[bytes]) -> None:
        for request in take:  # shared by all the loops of a step, which take turns
            if time.monotonic() >= deadline:
                return
            await probes.probe(request)

    print("bench: warm-up, every target once ...", file=sys.stderr)
    warm = iter(requests)
    await asyncio.gather(*(closed_loop(probes, math.inf, warm) for probes in probers[:8]))
    steps: list[dict[str, Any]] = []
    best: float = 0
    for concurrency in config["concurrency"]:
        for probes in probers:
            probes.outcomes.clear()
        before = Snapshot.take(running.process.pid, database_pids)
        deadline = time.monotonic() + config["step_s"]
        await asyncio.gather(*(closed_loop(probes, deadline, cycle) for probes in probers[:concurrency]))
        step = {"concurrency": concurrency} | summarize(
            [o for p in probers for o in p.outcomes], before.until(Snapshot.take(running.process.pid, database_pids))
        )
        steps.append(step)
        print(
            f"bench: concurrency {concurrency}: {step['probes_per_s']:.1f} probes/s, "
            f"p99 {step['latency_p99_ms']:.1f} ms, {step['failed_probes']} failed",
            file=sys.stderr,
        )
        if step["latency_p99_ms"] / 1000 > bound or step["failed_probes"]:
            break
        best = max(best, step["probes_per_s"])
    for probes in probers:
        probes.connection.close()
    return {"max_probes_per_s": best, "max_queries_per_s": best * QUERIES_PER_PROBE, "steps": steps}


def python_floor(running: Exporter, database_pids: Sequence[int], config: Mapping[str, Any]) -> dict[str, Any]:
    """CPU per query of the same queries on persistent PyMySQL connections (tests/bench/floor.py), measured alike.

    Open mode: every target once per interval, as sqlprobe was probed, against sqlprobe's figure. Saturation: back
    to back, one at a time, against sqlprobe's figure at one probe in flight.
    """
    open_mode = config["mode"] == "open"
    print("bench: measuring the Python floor (bare PyMySQL) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="sqlprobe-floor-") as directory:
        dsns = Path(directory) / "dsns.json"
        dsns.write_text(json.dumps(list(running.dsns.values())))
        interval = str(config["interval_s"] if open_mode else 0)
        command = [sys.executable, "-m", "tests.bench.floor", "--dsns", str(dsns), "--interval", interval]
        floor = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert floor.stdin is not None
        assert floor.stdout is not None
        if not floor.stdout.readline():  # it says when it is connected
            sys.exit(f"bench: the floor process could not connect (exit {floor.wait()})")
        begin = time.monotonic() + 0.5
        window_start = begin + (config["warmup_s"] if open_mode else 2)
        window_end = window_start + (config["duration_s"] if open_mode else config["step_s"])
        schedule = {"begin": begin, "window_start": window_start, "window_end": window_end, "end": window_end + 0.5}
        floor.stdin.write(json.dumps(schedule) + "\n")
        floor.stdin.flush()
        time.sleep(max(0.0, window_start - time.monotonic()))
        before = Snapshot.take(floor.pid, database_pids)
        time.sleep(max(0.0, window_end - time.monotonic()))
        window = before.until(Snapshot.take(floor.pid, database_pids))
        output, _ = floor.communicate(timeout=60)
    if floor.returncode != 0:
        sys.exit(f"bench: the floor process failed (exit {floor.returncode})")
    queries = json.loads(output)["queries"]
    return {
        "floor_schedule": "every target once per interval" if open_mode else "back to back, one at a time",
        "floor_queries": queries,
        "floor_cpu_us_per_query": _per(window["exporter_cpu_s"] * 1e6, queries),
        "floor_db_cpu_us_per_query": _per(window["db_cpu_s"] * 1e6, queries),
    }


def _ours(results: Mapping[str, Any]) -> float:
    """sqlprobe's CPU per query to set against the floor: the open loop's, or saturation's at one in flight."""
    steps = [step for step in results.get("steps", [results]) if step.get("concurrency", 1) == 1]
    return float(steps[0]["exporter_cpu_us_per_query"]) if steps else math.nan


def _probers(running: Exporter, config: Mapping[str, Any]) -> Probes:
    # A probe is abandoned a little after the scrape timeout, as Prometheus would.
    return Probes(Connection(running.host, running.port), timeout=config["scrape_timeout_s"] + 1)


def summarize(outcomes: Sequence[Outcome], window: Mapping[str, float]) -> dict[str, Any]:
    """The figures of one measured window: throughput, latency, failures and CPU per query."""
    probes = len(outcomes)
    queries = probes * QUERIES_PER_PROBE
    latencies = [outcome.latency for outcome in outcomes]
    failures = Counter(outcome.failure for outcome in outcomes if outcome.failure is not None)
    others = window["machine_cpu_s"] - window["exporter_cpu_s"] - window["db_cpu_s"] - window["generator_cpu_s"]
    return {
        "probes": probes,
        "queries": queries,
        "probes_per_s": probes / window["wall_s"],
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_max_ms": max(latencies, default=0) * 1000,
        "failed_probes": sum(failures.values()),
        "failures": dict(failures),
        **window,
        "exporter_cpu_s_per_1000_queries": _per(window["exporter_cpu_s"] * 1000, queries),
        "exporter_cpu_us_per_query": _per(window["exporter_cpu_s"] * 1e6, queries),
        "exporter_cores": window["exporter_cpu_s"] / window["wall_s"],
        "db_cpu_s_per_1000_queries": _per(window["db_cpu_s"] * 1000, queries),
        "db_cpu_us_per_query": _per(window["db_cpu_s"] * 1e6, queries),
        "generator_cpu_us_per_probe": _per(window["generator_cpu_s"] * 1e6, probes),
        "generator_cores": window["generator_cpu_s"] / window["wall_s"],
        "other_processes_cores": others / window["wall_s"],
    }


def _per(amount: float, count: int) -> float:
    return amount / count if count else math.nan


def percentile(values: Sequence[float], rank: float) -> float:
    """The nearest-rank percentile of ``values`` (0 when there are none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        # sqlprobe and the floor run on this interpreter too. How it was built moves every figure: on the VM of
        # the README, pyenv's default build (libpython as a shared library, no PGO) costs 1.1-1.4x Debian's.
        "python_executable": os.path.realpath(sys.executable),
        "python_links_libpython": _links_libpython(),
        "platform": platform.platform(),
        "mariadb": _output(["mariadbd", "--version"]) or _output(["/usr/sbin/mariadbd", "--version"]),
        "git_commit": _output(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_output(["git", "status", "--porcelain", "--untracked-files=no"])),
        # Uncommitted changes to the exporter, so runs of different working trees are told apart.
        "app_diff_sha256": hashlib.sha256(_output(["git", "diff", "HEAD", "--", "app"]).encode()).hexdigest()[:16],
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _links_libpython() -> bool:
    """True if this interpreter runs from a shared libpython (pyenv's default build) rather than a static one."""
    maps = Path("/proc/self/maps")
    return maps.exists() and "/libpython" in maps.read_text()


def _output(command: Sequence[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


ROWS = [
    ("probes/s", "probes_per_s", "{:.1f}"),
    ("probes (failed)", None, ""),
    ("latency p50 / p99 / max ms", None, ""),
    ("exporter CPU µs per query", "exporter_cpu_us_per_query", "{:.0f}"),
    ("exporter CPU s per 1,000 queries", "exporter_cpu_s_per_1000_queries", "{:.3f}"),
    ("exporter cores busy", "exporter_cores", "{:.2f}"),
    ("MariaDB CPU µs per query", "db_cpu_us_per_query", "{:.0f}"),
    ("generator CPU µs per probe", "generator_cpu_us_per_probe", "{:.0f}"),
    ("generator cores busy", "generator_cores", "{:.2f}"),
    ("other processes' cores busy", "other_processes_cores", "{:.2f}"),
]


def print_table(report: Mapping[str, Any]) -> None:
    """The figures of a run, for people."""
    config, results = report["config"], report["results"]
    print(
        f"\nsqlprobe bench ({config['mode']}): {config['targets']} targets on {config['servers']} MariaDB servers, "
        f"{config['queries_per_probe']} queries per probe, {report['machine']['cpu_count']} CPUs"
    )
    ran_on = report["machine"]
    shared = ", shared libpython" if ran_on.get("python_links_libpython") else ""
    print(f"Python {ran_on['python']} ({ran_on.get('python_executable', '?')}{shared})")
    if config["mode"] == "open":
        print(f"every target every {config['interval_s']:g} s, measured {config['duration_s']:g} s\n")
        _print_figures(results)
        print(f"  {'start lag p99 / max ms':34} {results['start_lag_p99_ms']:.1f} / {results['start_lag_max_ms']:.1f}")
        print(f"  {'longest event-loop stall ms':34} {results.get('loop_lag_max_ms', math.nan):.1f}")
    else:
        print(f"closed loop, {config['step_s']:g} s per step, p99 bound {config['p99_bound_ms']:g} ms\n")
        print(
            f"  {'in flight':>9} {'probes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'µs/query':>9} {'db µs/q':>8} {'gen µs/p':>9}"
        )
        for step in results["steps"]:
            print(
                f"  {step['concurrency']:>9} {step['probes_per_s']:>9.1f} {step['latency_p50_ms']:>8.1f} "
                f"{step['latency_p99_ms']:>8.1f} {step['failed_probes']:>7} {step['exporter_cpu_us_per_query']:>9.0f} "
                f"{step['db_cpu_us_per_query']:>8.0f} {step['generator_cpu_us_per_probe']:>9.0f}"
            )
        print(f"\n  {'max probes/s within bound':34} {results['max_probes_per_s']:.1f}")
    print(f"  {'exporter cores busy when idle':34} {results['exporter_idle_cores']:.3f}")
    if "floor_cpu_us_per_query" in results:
        print(
            f"  {'Python floor µs per query':34} {results['floor_cpu_us_per_query']:.0f} "
            f"(bare PyMySQL, {results['floor_schedule']}; MariaDB {results['floor_db_cpu_us_per_query']:.0f})\n"
            f"  {'exporter / floor':34} {results['exporter_to_floor']:.2f}"
        )
    print(
        f"  {'RSS total / idle MiB':34} {results['rss_mib']:.1f} / {results['rss_idle_mib']:.1f}\n"
        f"  {'RSS per target KiB':34} {results['rss_per_target_kib']:.0f}"
    )


def _print_figures(results: Mapping[str, Any]) -> None:
    for label, key, form in ROWS:
        if key is not None:
            value = form.format(results[key])
        elif label.startswith("probes"):
            value = f"{results['probes']} ({results['failed_probes']})"
            if results["failures"]:
                value += f" {results['failures']}"
        else:
            value = " / ".join(f"{results[k]:.1f}" for k in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms"))
        print(f"  {label:34} {value}")


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Every figure of two runs side by side, with after/before."""
    for part in ("config", "machine"):
        differ = {k: (before[part].get(k), v) for k, v in after[part].items() if before[part].get(k) != v}
        if differ:
            print(f"{part} differs: " + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items()))
    first, second = dict(_numbers(before["results"])), dict(_numbers(after["results"]))
    print(f"\n  {'figure':40} {'A':>12} {'B':>12} {'B/A':>8}")
    for key, value in first.items():
        if key in second:
            ratio = f"{second[key] / value:.2f}" if value else "-"
            print(f"  {key:40} {value:>12.4g} {second[key]:>12.4g} {ratio:>8}")


def _numbers(results: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in results.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            yield prefix + key, float(value)
        elif key == "steps":
            for step in value:
                yield from _numbers({k: v for k, v in step.items() if k != "concurrency"}, f"c{step['concurrency']}.")


if __name__ == "__main__":
    main()
