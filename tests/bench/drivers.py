"""MySQL drivers for probes on the event loop: CPU per query, throughput and memory per connection, compared.

    .venv/bin/python -m tests.bench.drivers [--targets 200] [--servers 4] [--interval 5] [--duration 30]
        [--rounds 3] [--ways thread-wire,aiomysql-ss,...] [--rss-connections 500]

Starts the bench's fleet (tests/bench/fleet.py), then runs each way in a process of its own, the ways in turn,
``--rounds`` times, so that all of them meet the same moments of the machine. A run:

1. memory: RSS before and after opening ``--rss-connections`` connections (spread over the targets), per connection;
2. paced: one connection per target, every target once per ``--interval`` with start times spread evenly, each
   probe running the bench's 3 queries in one read-only transaction (START TRANSACTION READ ONLY before the first,
   COMMIT after the last), reading at most ``ROW_LIMIT`` rows of each; an interval's warm-up, then ``--duration``
   seconds measured: the process's CPU (all threads) per query;
3. saturation: ``--in-flight`` probes back to back for ``--saturation`` seconds: queries/s and CPU per query.

Ways: ``thread-wire`` is today's path (PyMySQL and app.mysql_wire on app.workers' threads, the transaction's
statements in the same write as the queries); ``thread-cursor`` the same with PyMySQL's cursor (one round trip per
statement); ``aiomysql-*`` and ``asyncmy-*`` run on the event loop with an unbuffered cursor (``-ss``,
fetchmany(ROW_LIMIT)) or the default buffered one (``-buf``), one round trip per statement; ``-multi`` is ``-ss``
with the client flag MULTI_STATEMENTS, START TRANSACTION and COMMIT sent in the same COM_QUERY as the first and
last query (``START TRANSACTION READ ONLY; q1``, ``q3; COMMIT``): one round trip per query, as thread-wire. Every
way runs on uvloop, as sqlprobe does.
"""

import argparse
import asyncio
import gc
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import make_url

from tests.bench.fleet import QUERIES, database_fleet
from tests.bench.procstat import rss_bytes

WAYS = (
    "thread-wire",
    "thread-cursor",
    "aiomysql-ss",
    "aiomysql-buf",
    "aiomysql-multi",
    "asyncmy-ss",
    "asyncmy-buf",
    "asyncmy-multi",
)
ROW_LIMIT = 1001  # sqlprobe's default max_rows (1,000) plus one, as it reads them
BEGIN, END = "START TRANSACTION READ ONLY", "COMMIT"
STATEMENTS = [spec["query"] for spec in QUERIES.values()]

Probe = Callable[[Any], Coroutine[Any, Any, None]]


def main(argv: Sequence[str] | None = None) -> None:
    """Start the fleet, run every way in turn in a child process, print medians and ranges."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.drivers", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5, help="seconds between two runs of a target")
    parser.add_argument("--duration", type=float, default=30, help="seconds measured, paced, per way and round")
    parser.add_argument("--saturation", type=float, default=10, help="seconds back to back per way and round")
    parser.add_argument("--in-flight", type=int, default=8, help="probes in flight in the saturation step")
    parser.add_argument("--rss-connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ways", type=lambda text: text.split(","), default=list(WAYS), help=",".join(WAYS))
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--dsns", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        dsns = json.loads(args.dsns.read_text())
        print(json.dumps(uvloop.run(_child(args.child, dsns, args))), flush=True)
        return
    unknown = set(args.ways) - set(WAYS)
    if unknown:
        parser.error(f"unknown ways: {', '.join(sorted(unknown))}")
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in args.ways}
    with (
        tempfile.TemporaryDirectory(prefix="sqlprobe-drivers-") as directory,
        database_fleet(args.servers, args.targets, Path(directory)) as (_, dsns),
    ):
        dsns_file = Path(directory) / "dsns.json"
        dsns_file.write_text(json.dumps(list(dsns.values())))
        passed = [
            f"--{name}={getattr(args, name.replace('-', '_'))}"
            for name in ("interval", "duration", "saturation", "in-flight", "rss-connections")
        ]
        for round_number in range(1, args.rounds + 1):
            for way in args.ways:
                command = [sys.executable, "-m", "tests.bench.drivers", "--child", way, "--dsns", str(dsns_file)]
                output = subprocess.run([*command, *passed], check=True, stdout=subprocess.PIPE, text=True).stdout
                runs[way].append(json.loads(output.strip().splitlines()[-1]))
                figures = ", ".join(f"{key} {value:.1f}" for key, value in runs[way][-1].items())
                print(f"drivers: round {round_number}, {way}: {figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"arguments": {k: str(v) for k, v in vars(args).items()}, "runs": runs}))
    _print(args, runs)


def _print(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    print(
        f"\n{args.targets} targets every {args.interval:g} s (3 queries in a read-only transaction), "
        f"{args.rounds} rounds; median (min-max)"
    )
    keys = {
        "paced_cpu_us_per_query": "paced µs/query",
        "saturation_queries_per_s": f"queries/s, {args.in_flight} in flight",
        "saturation_cpu_us_per_query": "saturated µs/query",
        "rss_kib_per_connection": "KiB RSS/connection",
    }
    base = args.ways[0]
    print(f"  {'way':14}" + "".join(f" {title:>28}" for title in keys.values()))
    for way, figures in runs.items():
        cells = []
        for key in keys:
            values = [run[key] for run in figures]
            ratio = statistics.median(values) / statistics.median([run[key] for run in runs[base]])
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) {ratio:.2f}x")
        print(f"  {way:14}" + "".join(f" {cell:>28}" for cell in cells))
    print(f"  (ratios against {base})")


async def _child(way: str, dsns: Sequence[str], args: argparse.Namespace) -> dict[str, float]:
    connect, probe, close = _way(way)
    gc.collect()
    before = rss_bytes_now()
    many = [await connect(dsns[number % len(dsns)]) for number in range(args.rss_connections)]
    gc.collect()
    rss_per_connection = (rss_bytes_now() - before) / len(many) / 1024
    for connection in many:
        await close(connection)
    del many
    connections = [await connect(dsn) for dsn in dsns]
    await _paced(connections, probe, args.interval, args.interval)  # warm-up
    started = time.process_time()
    probes = await _paced(connections, probe, args.interval, args.duration)
    paced = (time.process_time() - started) * 1e6 / (probes * len(STATEMENTS))
    started, begin = time.process_time(), time.monotonic()
    probes = await _saturated(connections, probe, args.in_flight, args.saturation)
    cpu, wall = time.process_time() - started, time.monotonic() - begin
    for connection in connections:
        await close(connection)
    return {
        "paced_cpu_us_per_query": paced,
        "saturation_queries_per_s": probes * len(STATEMENTS) / wall,
        "saturation_cpu_us_per_query": cpu * 1e6 / (probes * len(STATEMENTS)),
        "rss_kib_per_connection": rss_per_connection,
    }


def rss_bytes_now() -> int:
    """This process's resident memory."""
    import os

    return rss_bytes(os.getpid())


async def _paced(connections: Sequence[Any], probe: Probe, interval: float, seconds: float) -> int:
    """Every connection's probe once per ``interval``, spread evenly, for ``seconds``; the number of probes."""
    loop = asyncio.get_running_loop()
    spacing = interval / len(connections)
    begin = loop.time()
    running: list[asyncio.Task[None]] = []
    while (slot := begin + len(running) * spacing) < begin + seconds:
        await asyncio.sleep(max(0.0, slot - loop.time()))
        running.append(asyncio.create_task(probe(connections[len(running) % len(connections)])))
    await asyncio.gather(*running)
    return len(running)


async def _saturated(connections: Sequence[Any], probe: Probe, in_flight: int, seconds: float) -> int:
    """``in_flight`` loops of probes back to back, each on its own share of the connections; the number of probes."""
    end = time.monotonic() + seconds
    counts = [0] * in_flight

    async def loop_of(index: int) -> None:
        mine = connections[index::in_flight]
        while time.monotonic() < end:
            await probe(mine[counts[index] % len(mine)])
            counts[index] += 1

    await asyncio.gather(*(loop_of(index) for index in range(in_flight)))
    return sum(counts)


def _way(way: str) -> tuple[Callable[[str], Awaitable[Any]], Probe, Callable[[Any], Awaitable[None]]]:
    """How ``way`` connects, probes and closes."""
    if way.startswith("thread-"):
        return _thread_way(way)
    if way.startswith("aiomysql-"):
        import aiomysql
        from pymysql.constants import CLIENT

        async def connect_aiomysql(dsn: str) -> Any:
            url = make_url(dsn)
            return await aiomysql.connect(
                host=url.host, port=url.port, user=url.username, password=url.password, db=url.database,
                autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS if way.endswith("-multi") else 0,
            )  # fmt: skip

        cursor = aiomysql.Cursor if way.endswith("-buf") else aiomysql.SSCursor
        return connect_aiomysql, _async_probe(cursor, way.endswith("-multi")), _ensure_closed
    import asyncmy
    from asyncmy.constants import CLIENT as ASYNCMY_CLIENT
    from asyncmy.cursors import Cursor, SSCursor

    async def connect_asyncmy(dsn: str) -> Any:
        url = make_url(dsn)
        return await asyncmy.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, database=url.database,
            autocommit=True, client_flag=ASYNCMY_CLIENT.MULTI_STATEMENTS if way.endswith("-multi") else 0,
        )  # fmt: skip

    cursor = Cursor if way.endswith("-buf") else SSCursor
    return connect_asyncmy, _async_probe(cursor, way.endswith("-multi")), _ensure_closed


async def _ensure_closed(connection: Any) -> None:
    await connection.ensure_closed()


def _async_probe(cursor_class: Any, multi: bool) -> Probe:
    async def probe_in_one(connection: Any) -> None:
        # START TRANSACTION in the first query's COM_QUERY, COMMIT in the last's: their results are read (and
        # dropped) by nextset(), and by close() for the last.
        last = len(STATEMENTS) - 1
        for index, statement in enumerate(STATEMENTS):
            sql = "; ".join(
                part for part in (BEGIN if index == 0 else "", statement, END if index == last else "") if part
            )
            cursor = await _cursor(connection, cursor_class)
            await cursor.execute(sql)
            if index == 0:
                await cursor.nextset()
            await cursor.fetchmany(ROW_LIMIT)
            await cursor.close()

    async def probe(connection: Any) -> None:
        await _command(connection, cursor_class, BEGIN)
        for statement in STATEMENTS:
            cursor = await _cursor(connection, cursor_class)
            await cursor.execute(statement)
            await cursor.fetchmany(ROW_LIMIT)
            await cursor.close()
        await _command(connection, cursor_class, END)

    return probe_in_one if multi else probe


async def _command(connection: Any, cursor_class: Any, sql: str) -> None:
    cursor = await _cursor(connection, cursor_class)
    await cursor.execute(sql)
    await cursor.close()


async def _cursor(connection: Any, cursor_class: Any) -> Any:
    # aiomysql's cursor() is a coroutine (wrapped in a context manager); asyncmy's returns the cursor.
    cursor = connection.cursor(cursor_class)
    return await cursor if inspect.isawaitable(cursor) else cursor


def _thread_way(way: str) -> tuple[Callable[[str], Awaitable[Any]], Probe, Callable[[Any], Awaitable[None]]]:
    from app import mysql_wire
    from app.engines import fetch_with_cursor
    from app.workers import Workers
    from tests.bench.floor import _connect

    workers = Workers(8, "drivers")

    def with_wire(connection: Any) -> None:
        last = len(STATEMENTS) - 1
        for index, statement in enumerate(STATEMENTS):
            before, after = (BEGIN if index == 0 else ""), (END if index == last else "")
            mysql_wire.fetch(connection, statement, before, after, ROW_LIMIT)

    def with_cursor(connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute(BEGIN)
        for statement in STATEMENTS:
            fetch_with_cursor(connection, statement, ROW_LIMIT)
        with connection.cursor() as cursor:
            cursor.execute(END)

    work = with_wire if way == "thread-wire" else with_cursor

    async def probe(connection: Any) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        workers.submit(lambda: work(connection), loop, lambda: done.set_result(None))
        await done

    async def connect(dsn: str) -> Any:
        return _connect(dsn)

    async def close(connection: Any) -> None:
        connection.close()

    return connect, probe, close


if __name__ == "__main__":
    main()
