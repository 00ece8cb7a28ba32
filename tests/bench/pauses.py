"""The garbage collector's longest pause with thousands of cached engines, and what each engine and probe leaves to it.

    .venv/bin/python -m tests.bench.pauses --engines 5000 [--rounds 3]

Starts a throwaway MariaDB (its thread pool, so that 5,000 connections are 5,000 sockets and not 5,000 threads),
loads a config of ``--engines`` targets as sqlprobe loads its files, and probes each target through sqlprobe's
Exporter on uvloop, as /probe does (200 at a time): each target then has its engine and one pooled connection.
Prints the objects the collector tracks per engine and per probe, and how long full collections take
(``gc.collect()`` timed, and the automatic ones seen through ``gc.callbacks``).
"""

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
import yaml

from app.config import load_config
from app.probe.exporter import Exporter
from app.probe.frozen import Freezer
from tests.bench.fleet import QUERIES, QUERY_SET
from tests.bench.procstat import rss_bytes
from tests.servers import MariaDB, mariadb_binaries, setup_schema

CONCURRENCY = 200
# The bench's three queries, the processlist one reading a few rows instead of every session of the server (5,000
# here, which would make the server the bottleneck); the collector's work per probe is the same.
PAUSE_QUERIES = {
    **QUERIES,
    "mysql_sessions_by_command": {
        **QUERIES["mysql_sessions_by_command"],
        "query": "select kind as command, count(*) sessions from probe.items group by kind",
    },
}
MiB = 1024 * 1024


class _Pauses:
    """Every automatic collection's length, by generation."""

    def __init__(self) -> None:
        self.took: list[list[float]] = [[], [], []]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.took[info["generation"]].append(time.perf_counter() - self._started)


async def _probe_all(exporter: Exporter) -> int:
    """Probe every target once, CONCURRENCY at a time; the number of failed probes."""
    targets = list(exporter.config.targets.values())
    failed = 0
    for start in range(0, len(targets), CONCURRENCY):
        results = await asyncio.gather(
            *(exporter.prober.probe(target, None, 10.0) for target in targets[start : start + CONCURRENCY])
        )
        for result in results:
            exporter.observe(result)
            failed += not result.success
    return failed


def _tracked(freezer: Freezer | None = None) -> Counter[str]:
    """The objects the collector tracks, by type, after a full collection (the frozen ones too)."""
    if freezer is not None:
        freezer.stop()  # gc.get_objects() lists no frozen object
    gc.collect()
    tracked = Counter(type(item).__qualname__ for item in gc.get_objects())
    if freezer is not None:
        freezer.start()
    return tracked


def _full_collections(times: int) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        gc.collect()
        took.append(time.perf_counter() - started)
    return took


def measure(engines: int, rounds: int, directory: Path, dsn: str, freeze: bool) -> dict[str, Any]:
    """The figures, for ``engines`` targets on the server at ``dsn``; with ``freeze``, sqlprobe's Freezer on."""
    (directory / "queries.yml").write_text(yaml.safe_dump({"query_sets": {QUERY_SET: PAUSE_QUERIES}}))
    targets = {f"t{index:05d}": {"dsn": dsn} for index in range(engines)}
    (directory / "targets.yml").write_text(
        yaml.safe_dump({"defaults": {"query_sets": [QUERY_SET], "timeout": "10s"}, "targets": targets})
    )
    before_config = _tracked()
    config = load_config(directory / "targets.yml", directory / "queries.yml")
    exporter = Exporter(config, max_workers=8)
    after_config = _tracked()
    pauses = _Pauses()
    report: dict[str, Any] = {"engines": engines, "freeze": freeze}
    freezer = exporter.freezer if freeze else None
    if freezer is not None:
        freezer.start()  # as the app's lifespan starts it

    async def run() -> None:
        failed = await _probe_all(exporter)  # the engines and their connections
        with_engines = _tracked(freezer)
        report["tracked_per_target_config"] = round((after_config - before_config).total() / engines, 1)
        per_engine = with_engines - after_config
        report["tracked_per_engine"] = round(per_engine.total() / engines, 1)
        report["tracked_per_engine_by_type"] = {
            name: round(count / engines, 2) for name, count in per_engine.most_common(25)
        }
        report["tracked_total"] = with_engines.total()
        gc.callbacks.append(pauses)
        collections = [stats["collections"] for stats in gc.get_stats()]
        started = time.perf_counter()
        for _ in range(rounds):
            failed += await _probe_all(exporter)
        report["wall_us_per_probe"] = round((time.perf_counter() - started) / (rounds * engines) * 1e6, 1)
        gc.callbacks.remove(pauses)
        after = [stats["collections"] for stats in gc.get_stats()]
        young = after[0] - collections[0]
        # A young collection runs each time threshold0 more containers were allocated than freed.
        report["young_collections_per_probe"] = round(young / (rounds * engines), 3)
        report["net_tracked_allocations_per_probe_approx"] = round(
            young * gc.get_threshold()[0] / (rounds * engines), 1
        )
        full = _full_collections(5)
        report["gc_collect_seconds"] = {"max": round(max(full), 4), "median": round(statistics.median(full), 4)}
        report["retained_per_probe"] = round((_tracked(freezer).total() - with_engines.total()) / (rounds * engines), 2)
        report["failed_probes"] = failed
        report["rss_mib"] = round(rss_bytes(os.getpid()) / MiB, 1)
        report["frozen"] = gc.get_freeze_count()
        await exporter.close()

    uvloop.run(run())
    exporter.freezer.stop()
    report["automatic_collections"] = {
        str(generation): {"count": len(took), "max": round(max(took, default=0.0), 4)}
        for generation, took in enumerate(pauses.took)
    }
    report["threshold"] = gc.get_threshold()
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of probes of every target after the first")
    parser.add_argument("--no-freeze", action="store_true", help="without sqlprobe's Freezer (app/probe/frozen.py)")
    args = parser.parse_args(argv)
    binaries = mariadb_binaries()
    if binaries is None:
        sys.exit("needs mariadbd and mariadb-install-db")
    with tempfile.TemporaryDirectory(prefix="sqlprobe-pauses-") as tmp:
        root = Path(tmp)
        options = [f"--max-connections={args.engines + 100}", "--thread-handling=pool-of-threads"]
        server = MariaDB("pauses", root / "db", options=options)
        server.install(binaries[1])
        server.start(binaries[0])
        try:
            setup_schema(server, scale=1)
            report = measure(args.engines, args.rounds, root, server.dsn, not args.no_freeze)
        finally:
            server.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
