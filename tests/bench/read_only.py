"""What the read-only transaction costs a probe: probes of 3 trivial queries back to back, in-process, against a
throwaway MariaDB, a read_only target against a read_only: false one, in alternating rounds.

    .venv/bin/python -m tests.bench.read_only [PROBES]
"""

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from app.config import Target
from app.drivers.engine_cache import EngineCache
from app.probe.prober import Prober
from tests.helpers import metric, target, write_config
from tests.servers import mariadb_binaries, mariadb_fleet

ROUNDS = 6


async def _rounds(
    prober: Prober, targets: Mapping[str, Target], per_round: int
) -> dict[str, list[tuple[float, float]]]:
    """Wall and CPU µs per probe of each target, one pair per round."""
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    for found in targets.values():
        await prober.probe(found, None, 5.0)  # connects
    for _ in range(ROUNDS):
        for name, found in targets.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                assert (await prober.probe(found, None, 5.0)).success
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            figures[name].append((wall / per_round * 1e6, cpu / per_round * 1e6))
    return figures


def main() -> None:
    """Print the median wall and CPU µs per probe of each kind of target."""
    probes = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    binaries = mariadb_binaries()
    assert binaries is not None, "MariaDB is not installed"
    with mariadb_fleet(1, binaries) as (server,), tempfile.TemporaryDirectory() as tmp:
        sets = {"three": {key: metric(f"select {number} as n", "n") for number, key in enumerate("abc")}}
        targets = {
            "read_only": target(server.dsn, "three"),
            "writable": {**target(server.dsn, "three"), "read_only": False},
        }
        config = write_config(Path(tmp), targets, sets)

        async def measure() -> dict[str, list[tuple[float, float]]]:
            engines = EngineCache()
            prober = Prober(engines)
            try:
                return await _rounds(prober, config.targets, probes // ROUNDS)
            finally:
                prober.close()
                await engines.dispose_all()

        figures = asyncio.run(measure())
    for name, pairs in figures.items():
        wall = statistics.median(pair[0] for pair in pairs)
        cpu = statistics.median(pair[1] for pair in pairs)
        print(f"{name}: {wall:.0f} µs wall, {cpu:.0f} µs CPU per probe (medians of {ROUNDS} rounds)")


if __name__ == "__main__":
    main()
