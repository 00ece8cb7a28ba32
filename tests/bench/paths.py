"""Ways of running a probe's queries, without HTTP: what each costs per query when paced like Prometheus.

The bench's fleet and queries, one persistent PyMySQL connection per target, every target once per interval with
start times spread evenly; this process's own CPU (all threads) per query. Each way runs for ``--duration``
seconds, the ways in turn, ``--rounds`` times, so that all of them meet the same moments of the machine.

- ``cursor``: PyMySQL's cursor, blocking, paced by ``time.sleep`` (what ``--floor`` measures);
- ``wire``: ``app.mysql_wire``, blocking, paced the same way;
- ``loop-blocking``: an event loop paces the probes and runs each one's queries on itself, blocking (a reference
  only: one hung server would stop every probe);
- ``thread``: the event loop hands each probe to ``app.workers``' threads and is woken when it is done, as
  sqlprobe's prober does;
- ``loop``: the queries run on the event loop itself, on non-blocking sockets.

python -m tests.bench.paths [--targets 200] [--servers 4] [--interval 5] [--duration 20] [--rounds 3] [--ways ...]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from app import mysql_wire
from app.workers import Workers
from tests.bench.fleet import QUERIES, database_fleet
from tests.bench.floor import _connect

Connection = Any  # a PyMySQL connection (PyMySQL has no type hints)
Statements = Sequence[str]
WAYS = ("cursor", "wire", "loop-blocking", "thread", "loop")


def main(argv: Sequence[str] | None = None) -> None:
    """Start the fleet, run every way in turn, print CPU µs per query for each."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.paths", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5, help="seconds between two runs of a target")
    parser.add_argument("--duration", type=float, default=20, help="seconds per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ways", type=lambda text: text.split(","), default=list(WAYS), help=",".join(WAYS))
    args = parser.parse_args(argv)
    unknown = set(args.ways) - set(WAYS)
    if unknown:
        parser.error(f"unknown ways: {', '.join(sorted(unknown))}")
    statements = [spec["query"] for spec in QUERIES.values()]
    figures: dict[str, list[float]] = {way: [] for way in args.ways}
    with (
        tempfile.TemporaryDirectory(prefix="sqlprobe-paths-") as directory,
        database_fleet(args.servers, args.targets, Path(directory)) as (_, dsns),
    ):
        connections = [_connect(dsn) for dsn in dsns.values()]
        for _ in range(args.rounds):
            for way in args.ways:
                started = time.process_time()
                queries = _run(way, connections, statements, args.interval, args.duration)
                figures[way].append((time.process_time() - started) * 1e6 / queries)
                print(f"paths: {way}: {figures[way][-1]:.0f} µs per query ({queries} queries)", flush=True)
        for connection in connections:
            connection.close()
    print(f"\n{args.targets} targets every {args.interval:g} s, {args.rounds} rounds of {args.duration:g} s per way")
    print(f"  {'way':15} {'µs per query: mean':>19} {'(min-max)':>12}")
    for way, values in figures.items():
        print(f"  {way:15} {statistics.mean(values):>19.0f} {f'({min(values):.0f}-{max(values):.0f})':>12}")


def _run(way: str, connections: Sequence[Connection], statements: Statements, interval: float, seconds: float) -> int:
    """Run ``way`` on the schedule for ``seconds``; the number of queries it ran."""
    if way == "cursor":
        return _paced(connections, statements, interval, seconds, _with_cursor)
    if way == "wire":
        return _paced(connections, statements, interval, seconds, _with_wire)
    return uvloop.run(_on_loop(way, connections, statements, interval, seconds))


def _paced(
    connections: Sequence[Connection],
    statements: Statements,
    interval: float,
    seconds: float,
    probe: Callable[[Connection, Statements], None],
) -> int:
    spacing = interval / len(connections)
    begin = time.monotonic()
    probes = 0
    while (slot := begin + probes * spacing) < begin + seconds:
        if (delay := slot - time.monotonic()) > 0:
            time.sleep(delay)
        probe(connections[probes % len(connections)], statements)
        probes += 1
    return probes * len(statements)


def _with_cursor(connection: Connection, statements: Statements) -> None:
    for statement in statements:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            cursor.fetchall()


def _with_wire(connection: Connection, statements: Statements) -> None:
    for statement in statements:
        mysql_wire.fetch(connection, statement)


async def _on_loop(
    way: str, connections: Sequence[Connection], statements: Statements, interval: float, seconds: float
) -> int:
    loop = asyncio.get_running_loop()
    workers = Workers(8, "paths")

    async def probe(connection: Connection) -> None:
        if way == "loop-blocking":
            _with_wire(connection, statements)
        elif way == "thread":
            done = loop.create_future()
            workers.submit(lambda: _with_wire(connection, statements), loop, lambda: done.set_result(None))
            await done
        else:
            await _non_blocking(loop, connection, statements)

    spacing = interval / len(connections)
    begin = loop.time()
    running: list[asyncio.Task[None]] = []
    while (slot := begin + len(running) * spacing) < begin + seconds:
        await asyncio.sleep(max(0.0, slot - loop.time()))
        running.append(asyncio.create_task(probe(connections[len(running) % len(connections)])))
    await asyncio.gather(*running)
    workers.close()
    return len(running) * len(statements)


class _Incomplete(Exception):
    """The bytes received so far end inside the response."""


class _BufferedReader(mysql_wire._Reader):
    """mysql_wire's packet reader over bytes already received: raises _Incomplete instead of reading more."""

    def __init__(self, connection: Connection, data: bytes) -> None:
        self.connection = connection
        self._buffer = data
        self._position = 0
        self._sequence = 1

    def _need(self, count: int) -> None:
        if len(self._buffer) - self._position < count:
            raise _Incomplete


async def _non_blocking(loop: asyncio.AbstractEventLoop, connection: Connection, statements: Statements) -> None:
    """The statements on the event loop: send each, parse its response as the bytes arrive (re-parsed whole)."""
    sock = connection._sock
    sock.setblocking(False)
    received = b""
    answered: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        nonlocal received
        try:
            received += sock.recv(65536)
        except BlockingIOError:
            return
        reader = _BufferedReader(connection, received)
        try:
            mysql_wire._result(reader, reader.packet(), sys.maxsize)
        except _Incomplete:
            return
        received = b""
        answered.set_result(None)

    loop.add_reader(sock.fileno(), readable)
    try:
        for statement in statements:
            payload = b"\x03" + statement.encode()
            answered = loop.create_future()
            packet = len(payload).to_bytes(3, "little") + b"\x00" + payload
            if sock.send(packet) != len(packet):  # a few bytes into an empty socket buffer: never short
                raise RuntimeError("short send")
            await answered
    finally:
        loop.remove_reader(sock.fileno())
        sock.setblocking(True)


if __name__ == "__main__":
    main()
