"""The Python floor: the bench's queries on persistent PyMySQL connections, and nothing else.

Run by `make bench … --floor` as a process of its own, so that its CPU is measured from /proc exactly as
sqlprobe's is. It connects once to every target, then from ``--begin`` runs each target's queries once per
interval with start times spread evenly (``--interval``), or back to back (``--interval 0``, the closed-loop
floor), until ``--end``. It prints, as JSON, how many queries ran within the measured window.

python -m tests.bench.floor --dsns DSNS.json --begin T --window-start T --window-end T --end T [--interval S]
(times on the monotonic clock, which every process of the machine shares)
"""

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import pymysql
from sqlalchemy import make_url

from tests.bench.fleet import QUERIES


def main(argv: Sequence[str] | None = None) -> None:
    """Connect, run the schedule, print the count of queries in the window."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--dsns", required=True, help="a JSON list of the targets' DSNs")
    for name in ("--begin", "--window-start", "--window-end", "--end"):
        parser.add_argument(name, type=float, required=True)
    parser.add_argument("--interval", type=float, default=0, help="seconds between two runs of a target; 0: no pause")
    args = parser.parse_args(argv)
    connections = [_connect(dsn) for dsn in json.loads(Path(args.dsns).read_text())]
    statements = [spec["query"] for spec in QUERIES.values()]
    spacing = args.interval / len(connections)
    in_window = 0
    for number in itertools.count():
        slot = args.begin + number * spacing
        if (delay := slot - time.monotonic()) > 0:
            time.sleep(delay)
        if time.monotonic() >= args.end:
            break
        for statement in statements:
            with connections[number % len(connections)].cursor() as cursor:
                cursor.execute(statement)
                cursor.fetchall()
        if args.window_start <= time.monotonic() <= args.window_end:
            in_window += len(statements)
    print(json.dumps({"queries": in_window}))


def _connect(dsn: str) -> "pymysql.Connection[pymysql.cursors.Cursor]":
    url = make_url(dsn)
    return pymysql.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database, autocommit=True
    )


if __name__ == "__main__":
    main()
