"""The Python floor: the bench's queries on persistent PyMySQL connections, and nothing else.

Run by `make bench … --floor` as a process of its own, so that its CPU is measured from /proc exactly as
sqlprobe's is. It connects once to every target and says so on stdout; then it reads its schedule from stdin (one
JSON line: begin, window_start, window_end and end, on the monotonic clock that every process of the machine
shares). From begin it runs each target's queries once per interval with start times spread evenly
(``--interval``), or back to back (``--interval 0``, the closed-loop floor), until end. Last, it prints how many
queries ran within the measured window, as JSON.

python -m tests.bench.floor --dsns DSNS.json [--interval S]
"""

import argparse
import itertools
import json
import sys
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
    parser.add_argument("--interval", type=float, default=0, help="seconds between two runs of a target; 0: no pause")
    args = parser.parse_args(argv)
    connections = [_connect(dsn) for dsn in json.loads(Path(args.dsns).read_text())]
    print(json.dumps({"connected": len(connections)}), flush=True)
    schedule = json.loads(sys.stdin.readline())
    statements = [spec["query"] for spec in QUERIES.values()]
    spacing = args.interval / len(connections)
    in_window = 0
    for number in itertools.count():
        slot = schedule["begin"] + number * spacing
        if (delay := slot - time.monotonic()) > 0:
            time.sleep(delay)
        if time.monotonic() >= schedule["end"]:
            break
        for statement in statements:
            with connections[number % len(connections)].cursor() as cursor:
                cursor.execute(statement)
                cursor.fetchall()
        if schedule["window_start"] <= time.monotonic() <= schedule["window_end"]:
            in_window += len(statements)
    print(json.dumps({"queries": in_window}), flush=True)


def _connect(dsn: str) -> "pymysql.Connection[pymysql.cursors.Cursor]":
    url = make_url(dsn)
    # No TLS: the bench's servers offer none, so queries travel the same way as sqlprobe's, and PyMySQL's
    # per-connection TLS context (55 ms and 830 KiB each) would make 2,000 connections take minutes and GiBs.
    return pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        autocommit=True,
        ssl_disabled=True,
    )


if __name__ == "__main__":
    main()
