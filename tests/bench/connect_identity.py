"""What the identity query at connect costs (app/kills.py): a new connection's time with and without it.

python -m tests.bench.connect_identity [--connections 150] [--rounds 3]

One MariaDB of the bench's; each round opens ``--connections`` new connections through a (read-only) target's
engine three ways, taking turns connection by connection: the identity query sent with the session's setup in one
round trip (as sqlprobe does), sent after it (a round trip of its own), and not at all; prints the median time
per connection of each (best round) and their ratios to the last.
"""

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

import app.engines as engines
from app.config import Target, load_config
from app.kills import read_identity
from tests.bench.fleet import database_fleet


def _setup_only(dbapi_connection: Any, target: Target) -> None:
    """The session's setup as before the identity query (MariaDB, read-only)."""
    seconds = math.ceil(target.timeout + engines.DEADLINE_GRACE)
    engines._mysql_command(dbapi_connection, f"SET SESSION idle_readonly_transaction_timeout = {seconds}")


def _separately(dbapi_connection: Any, target: Target) -> None:
    """The setup, then the identity query in a round trip of its own."""
    _setup_only(dbapi_connection, target)
    read_identity(engines._fetch_mysql, dbapi_connection)


def _target(dsn: str, directory: Path) -> Target:
    (directory / "targets.yml").write_text(f"targets:\n  db:\n    dsn: '{dsn}'\n    query_sets: [one]\n")
    (directory / "queries.yml").write_text(
        "query_sets:\n  one:\n    up:\n      query: select 1 as up\n      type: gauge\n      description: d\n"
        "      value: up\n"
    )
    return load_config(directory / "targets.yml", directory / "queries.yml").targets["db"]


def _connect_times(engines_by_way: dict[str, Engine], connections: int) -> dict[str, float]:
    """Median time of a new connection per way, the ways taking turns connection by connection."""
    times: dict[str, list[float]] = {way: [] for way in engines_by_way}
    for _ in range(connections):
        for way, engine in engines_by_way.items():
            started = time.perf_counter()
            connection = engine.raw_connection()
            times[way].append(time.perf_counter() - started)
            connection.invalidate()  # the next one is new too
            connection.close()
    return {way: statistics.median(values) for way, values in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """Start one server, time new connections with and without the identity query, print both and the ratio."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.connect_identity")
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sqlprobe-identity-") as tmp, database_fleet(1, 1, Path(tmp)) as fleet:
        _, dsns = fleet
        (dsn,) = dsns.values()
        folded = engines._MYSQL.connected
        ways = {"folded": folded, "separate": _separately, "without": _setup_only}
        target = _target(dsn, Path(tmp))
        engines_by_way = {}
        for label, way in ways.items():  # each engine keeps the setup it was built with
            engines._MYSQL = replace(engines._MYSQL, connected=way)
            engines_by_way[label] = engines.create_target_engine(target)
        engines._MYSQL = replace(engines._MYSQL, connected=folded)
        best: dict[str, float] = {}
        try:
            for _ in range(args.rounds):
                for label, median in _connect_times(engines_by_way, args.connections).items():
                    best[label] = min(best.get(label, median), median)
        finally:
            for engine in engines_by_way.values():
                engine.dispose()
    for label in ways:
        print(f"{label:>9}: {best[label] * 1e3:.3f} ms per new connection, {best[label] / best['without']:.2f}x")


if __name__ == "__main__":
    main()
