"""`make bench`: probe sqlprobe the way Prometheus does and measure it from outside its process.

python -m tests.bench.run [--targets 200] [--servers 4] [--interval 5] [--duration 60] [--go]
python -m tests.bench.run --mode saturation [--concurrency 1,2,4,8,16,32,64] [--step 10] [--p99-bound-ms 50]
python -m tests.bench.run --compare before.json after.json
"""

import argparse
import asyncio
import datetime
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import uvloop

from tests.bench.client import Connection, Probes, probe_request
from tests.bench.figures import per, percentile, summarize
from tests.bench.fleet import QUERIES_PER_PROBE, Exporter, bench_setup, default_servers
from tests.bench.go_exporter import GoExporter, go_exporter, go_results, installed, queries_by_user, scrape_every
from tests.bench.procstat import Snapshot, rss_bytes
from tests.bench.report import compare, machine, print_table
from tests.bench.stalls import Samples, own_metrics, pauses_within
from tests.servers import MariaDB

RESULTS_DIRECTORY = Path("bench-results")
# Seconds the exporter is watched before the first probe: its CPU when nobody asks anything.
IDLE_SECONDS = 3


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bench (or compare two runs) as the command line asks."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.go and args.mode != "open":
        parser.error("--go compares the two exporters in open mode only")
    if args.compare:
        compare(*(json.loads(Path(path).read_text()) for path in args.compare))
        return
    started = datetime.datetime.now(datetime.UTC)
    args.servers = args.servers or default_servers(args.targets)
    config = {
        "mode": args.mode,
        "targets": args.targets,
        "servers": args.servers,
        "queries_per_probe": QUERIES_PER_PROBE,
        "interval_s": args.interval,
        "warmup_s": args.warmup if args.warmup is not None else args.interval,
        "duration_s": args.duration,
        "scrape_timeout_s": args.scrape_timeout,
        # Enough keep-alive connections for every probe due within 2 s, each then reused before uvicorn's 5 s idle
        # timeout closes it: Prometheus does not hold a probe back because others are in flight, nor should we.
        "max_in_flight": args.max_in_flight or max(128, math.ceil(args.targets / args.interval * 2)),
        "concurrency": args.concurrency,
        "step_s": args.step,
        "p99_bound_ms": args.p99_bound_ms,
        "exporter_args": args.exporter_arg,
    }
    go_binary = installed() if args.go else None
    config["go"] = go_binary is not None
    print(f"bench: starting {args.servers} MariaDB servers, {args.targets} targets and sqlprobe ...", file=sys.stderr)
    with ExitStack() as stack:
        running, fleet, root = stack.enter_context(
            bench_setup(args.servers, args.targets, args.exporter_arg, users_per_target=2 if go_binary else 1)
        )
        go = None
        if go_binary is not None:
            print("bench: starting the Go sql_exporter beside it ...", file=sys.stderr)
            go = stack.enter_context(go_exporter(go_binary, root, fleet, running.targets, args.interval))
        database_pids = [server.process.pid for server in fleet if server.process is not None]
        time.sleep(1)  # let the freshly started exporter settle before taking its idle memory and CPU
        idle = Snapshot.take(running.process.pid, database_pids)
        time.sleep(IDLE_SECONDS)
        idle_window = idle.until(Snapshot.take(running.process.pid, database_pids))
        idle_rss = rss_bytes(running.process.pid)
        if args.mode == "open":
            results: dict[str, Any] = uvloop.run(open_loop(running, database_pids, config, fleet, go))
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
    parser.add_argument(
        "--servers", type=int, help="throwaway MariaDB servers (default 4, or one per 250 targets above 1,000)"
    )
    parser.add_argument("--interval", type=float, default=5, help="seconds between two probes of one target (open)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default: one interval)")
    parser.add_argument("--duration", type=float, default=60, help="seconds measured (open)")
    parser.add_argument("--scrape-timeout", type=float, default=10, help="X-Prometheus-Scrape-Timeout-Seconds")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        help="probes in flight at most (open; default 128, or the probes due in 2 s when more: 667 for 10,000 "
        "targets every 30 s)",
    )
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
    parser.add_argument(
        "--go",
        action="store_true",
        help="run Debian's prometheus-sql-exporter (Go; installed with apt-get if missing) beside sqlprobe on the "
        "same servers, targets, queries and interval, and give both CPU per query (open)",
    )
    parser.add_argument("--json", help="where to write the figures (default bench-results/<time>-<mode>.json)")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print B/A for two runs and exit")
    return parser


async def open_loop(
    running: Exporter,
    database_pids: Sequence[int],
    config: Mapping[str, Any],
    servers: Sequence[MariaDB],
    go: GoExporter | None,
) -> dict[str, Any]:
    """Every target once per interval, start times spread evenly, at most ``max_in_flight`` at once.

    With ``go``, the Go exporter runs its own schedule meanwhile and is measured over the same window.
    """
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
    counted: list[dict[str, float]] = []  # queries by each exporter's users, from MariaDB, at the window's ends
    pauses: list[Samples] = []
    metrics_seconds: list[float] = []  # how long sqlprobe's own /metrics took to answer, at each end
    go_pid = go.process.pid if go is not None else None

    async def take_window_ends() -> None:  # apart from the schedule, which it must not delay
        for moment in (window_start, window_end):
            await asyncio.sleep(moment - time.monotonic())
            snapshots.append(Snapshot.take(running.process.pid, database_pids, go_pid))
            counted.append(await asyncio.to_thread(queries_by_user, servers) if go is not None else {})
            samples, took = await asyncio.to_thread(own_metrics, running)
            pauses.append(samples)
            metrics_seconds.append(took)

    window_ends = asyncio.create_task(take_window_ends())
    scrapes = asyncio.create_task(scrape_every(go, interval, window_end)) if go is not None else None
    for slot_number in itertools.count():
        slot = begin + slot_number * spacing
        if slot >= window_end:
            break
        if (delay := slot - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((slot, requests[slot_number % len(requests)]))
    await window_ends
    print("bench: measured; letting probes in flight finish ...", file=sys.stderr)
    backlog = queue.qsize()  # probes due in the window that no worker had started: more than it could take
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
    await queue.join()
    for worker in workers:
        worker.cancel()
    for probes in probers:
        probes.connection.close()
    outcomes = [o for p in probers for o in p.outcomes if window_start <= o.finished <= window_end]
    late = [lag for start, lag in lags if window_start <= start <= window_end]
    window = snapshots[0].until(snapshots[1])
    results = summarize(outcomes, window)
    results["start_lag_p99_ms"] = percentile(late, 99) * 1000
    results["start_lag_max_ms"] = max(late, default=0) * 1000
    results["probes_expected"] = duration * len(requests) / interval
    results["probes_not_started"] = backlog
    results["loop_lag_max_ms"] = pauses[-1].get(("sqlprobe_event_loop_lag_max_seconds", "", ""), math.nan) * 1000
    results |= pauses_within(pauses[0], pauses[1])
    results["own_metrics_answer_max_s"] = max(metrics_seconds)
    if go is not None and scrapes is not None:
        queries = {user: counted[1][user] - counted[0][user] for user in counted[0]}
        results |= go_results(go, window, queries, await scrapes, results["queries"])
        # MariaDB's CPU served both exporters' queries in the window.
        results["db_cpu_us_per_query"] = per(window["db_cpu_s"] * 1e6, results["queries"] + results["go_queries"])
    return results


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
        "floor_cpu_us_per_query": per(window["exporter_cpu_s"] * 1e6, queries),
        "floor_db_cpu_us_per_query": per(window["db_cpu_s"] * 1e6, queries),
    }


def _ours(results: Mapping[str, Any]) -> float:
    """sqlprobe's CPU per query to set against the floor: the open loop's, or saturation's at one in flight."""
    steps = [step for step in results.get("steps", [results]) if step.get("concurrency", 1) == 1]
    return float(steps[0]["exporter_cpu_us_per_query"]) if steps else math.nan


def _probers(running: Exporter, config: Mapping[str, Any]) -> Probes:
    # A probe is abandoned a little after the scrape timeout, as Prometheus would.
    return Probes(Connection(running.host, running.port), timeout=config["scrape_timeout_s"] + 1)


if __name__ == "__main__":
    main()
