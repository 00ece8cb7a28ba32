"""The status page's size and render time with a big fleet, every target probed for real (SQLite in memory).

python -m tests.bench.status_page [--targets 2000] [--failing 200] [--renders 5]
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import client_for, metric, target, write_config

QUERY_SETS = {
    "bench": {
        "up": metric("select 1 as up", "up"),
        "rows": metric("select 2 as n union all select 3", "n"),
        "gone": metric("select n from (select 1 as n)", "n"),
    },
    "broken": {"missing": metric("select 1 as n from no_such_table", "n")},
}


def main(argv: Sequence[str] | None = None) -> None:
    """Probe every target once, then fetch / several times and print its size and render times."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.status_page", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--failing", type=int, default=200, help="of which this many fail (a missing table)")
    parser.add_argument("--renders", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sqlprobe-status-bench-") as tmp:
        targets = {
            f"db-{index:05d}": target("sqlite://", "bench", *(["broken"] if index < args.failing else []))
            for index in range(args.targets)
        }
        config = write_config(Path(tmp), targets, QUERY_SETS)
        with client_for(config) as client:
            for name in targets:
                client.get("/probe", params={"target": name})
            seconds = []
            for _ in range(args.renders):
                started = time.perf_counter()
                response = client.get("/")
                seconds.append(time.perf_counter() - started)
    size = len(response.content)
    print(f"status page with {args.targets} targets ({args.failing} failing), {args.renders} renders through HTTP:")
    print(f"  size: {size:,} bytes ({size / args.targets:.0f} per target)")
    print(f"  time: min {min(seconds) * 1000:.1f} ms, median {statistics.median(seconds) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
