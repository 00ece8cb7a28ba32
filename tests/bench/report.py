"""What `make bench` prints and records: the machine, the table of a run, and two runs compared."""

import hashlib
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


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
        if results.get("probes_not_started"):
            print(f"  {'probes due but never started':34} {results['probes_not_started']} (the load outran the bench)")
        print(f"  {'start lag p99 / max ms':34} {results['start_lag_p99_ms']:.1f} / {results['start_lag_max_ms']:.1f}")
        print(f"  {'longest event-loop stall ms':34} {results.get('loop_lag_max_ms', math.nan):.1f} (since start)")
        if "loop_lags_over_50ms" in results:
            print(
                f"  {'  in the window':34} ≤ {results['loop_lag_window_max_bucket_ms']:g} "
                f"({results['loop_lags_over_50ms']:.0f} over 50 ms)\n"
                f"  {'full collections in the window':34} {results['gc_full_collections']:.0f}, "
                f"longest ≤ {results['gc_pause_window_max_bucket_ms']:g} ms"
            )
        if "own_metrics_answer_max_s" in results:
            print(f"  {'its /metrics answered within s':34} {results['own_metrics_answer_max_s']:.2f}")
        if "go_queries" in results:
            _print_go(results)
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


def _print_go(results: Mapping[str, Any]) -> None:
    print(
        "\n  Go sql_exporter beside it (same servers, targets, queries and interval; its own schedule):\n"
        f"  {'Go queries (per s)':34} {results['go_queries']} ({results['go_queries_per_s']:.1f}), counted by MariaDB\n"
        f"  {'Go CPU µs per query':34} {results['go_cpu_us_per_query']:.0f}\n"
        f"  {'sqlprobe / Go CPU per query':34} {results['exporter_to_go']:.2f}\n"
        f"  {'Go cores busy':34} {results['go_cores']:.3f}\n"
        f"  {'Go targets reporting / failing':34} {results['go_targets_reporting']} / {results['go_targets_failing']}\n"
        f"  {'Go /metrics scrapes (longest ms)':34} {results['go_metrics_scrapes']} "
        f"({results['go_metrics_scrape_max_ms']:.1f})\n"
        f"  {'sqlprobe queries, by MariaDB':34} {results['exporter_queries_counted_by_mariadb']} "
        f"({results['exporter_cpu_us_per_executed_query']:.0f} µs of its CPU each)"
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
