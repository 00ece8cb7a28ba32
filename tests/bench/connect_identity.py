"""What the identity query at connect costs (app/kills.py): new connections per second with and without it.

python -m tests.bench.connect_identity [--connections 150] [--rounds 3]

One MariaDB of the bench's; each round opens ``--connections`` new connections through a target's engine, first
with the identity query, then without it; prints the median time per connection of each and their ratio (best
round of each).
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import app.engines as engines
from app.config import load_config
from tests.bench.fleet import database_fleet


def _median_connect(dsn: str, directory: Path, connections: int) -> float:
    (directory / "targets.yml").write_text(f"targets:\n  db:\n    dsn: '{dsn}'\n    query_sets: [one]\n")
    (directory / "queries.yml").write_text(
        "query_sets:\n  one:\n    up:\n      query: select 1 as up\n      type: gauge\n      description: d\n"
        "      value: up\n"
    )
    target = load_config(directory / "targets.yml", directory / "queries.yml").targets["db"]
    engine = engines.create_target_engine(target)
    times = []
    try:
        for _ in range(connections):
            started = time.perf_counter()
            connection = engine.raw_connection()
            times.append(time.perf_counter() - started)
            connection.invalidate()  # the next one is new too
            connection.close()
    finally:
        engine.dispose()
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    """Start one server, time new connections with and without the identity query, print both and the ratio."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.connect_identity")
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sqlprobe-identity-") as tmp, database_fleet(1, 1, Path(tmp)) as fleet:
        _, dsns = fleet
        (dsn,) = dsns.values()
        identify = engines._MYSQL.identify
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for label, way in (("with", identify), ("without", None)):
                engines._MYSQL = replace(engines._MYSQL, identify=way)
                median = _median_connect(dsn, Path(tmp), args.connections)
                best[label] = min(best.get(label, median), median)
        engines._MYSQL = replace(engines._MYSQL, identify=identify)
    print(f"new connection, median: {best['with'] * 1e3:.3f} ms with the identity query, "
          f"{best['without'] * 1e3:.3f} ms without; ratio {best['with'] / best['without']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
