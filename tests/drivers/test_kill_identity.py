"""KILL QUERY goes only to the server the statement runs on, even behind a proxy that spreads connections."""

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pymysql
import pytest

from app.drivers import kills
from tests.helpers import client_for, parse_samples, target, value, wait_until, write_config
from tests.relay import Relay
from tests.servers import MariaDB

SLEEPY = {"nap": {"query": "select sleep(20) as slept", "type": "gauge", "description": "d", "value": "slept"}}
USER = "relayed"
DEADLINE = {"X-Prometheus-Scrape-Timeout-Seconds": "1"}


@pytest.fixture
def relayed_user(fleet: Sequence[MariaDB]) -> Iterator[str]:
    """One user with one password on both servers, as behind a proxy; yields the password."""
    password = "relay-" + secrets.token_hex(8)
    for server in fleet:
        server.execute(
            f"create or replace user '{USER}'@'%' identified by '{password}'",
            f"grant select on probe.* to '{USER}'@'%'",
        )
    yield password
    for server in fleet:
        for session, _, _ in server.exporter_sessions(user=USER):
            with contextlib.suppress(pymysql.MySQLError):
                server.execute(f"kill {session}")
        server.execute(f"drop user if exists '{USER}'@'%'")


def _next_ids_made_equal(here: MariaDB, there: MariaDB) -> int:
    """Open connections on the server behind until both give the same id to their next connection; return it."""

    def last_id(server: MariaDB) -> int:
        return int(server.root_query("select connection_id()")[0][0])

    ids = {here.name: last_id(here), there.name: last_id(there)}
    while ids[here.name] != ids[there.name]:
        behind = here if ids[here.name] < ids[there.name] else there
        ids[behind.name] = last_id(behind)
    return ids[here.name] + 1


def _sleeping(server: MariaDB, session: int) -> bool:
    return any(
        session_id == session and info and "sleep" in info for session_id, _, info in server.exporter_sessions(USER)
    )


def test_a_kill_that_would_reach_another_server_is_not_sent(
    tmp_path: Path, fleet: Sequence[MariaDB], relayed_user: str
) -> None:
    here, there = fleet
    with Relay([here.port, there.port]) as relay:
        dsn = f"mysql+pymysql://{USER}:{relayed_user}@127.0.0.1:{relay.port}/probe"
        config = write_config(tmp_path, {"db": target(dsn, "sleepy")}, {"sleepy": SLEEPY})
        with client_for(config) as client:
            # A session on the other server with the very id the probe's session will have on its own.
            session = _next_ids_made_equal(here, there)
            victim_result: list[Any] = []
            victim = pymysql.connect(host="127.0.0.1", port=there.port, user=USER, password=relayed_user)
            assert victim.thread_id() == session
            sleeper = threading.Thread(target=lambda: victim_result.append(_query(victim, "select sleep(20)")))
            sleeper.start()
            try:
                assert wait_until(lambda: _sleeping(there, session), 5)
                # The probe's connection is the relay's first (to `here`); the kill's is its second (to `there`).
                response = client.get("/probe", params={"target": "db"}, headers=DEADLINE)
                assert value(parse_samples(response.text), "probe_success") == 0.0
                assert wait_until(
                    lambda: 'sqlprobe_kill_skipped_total{reason="other_server"} 1.0' in client.get("/metrics").text, 10
                )
                # The session on the other server still sleeps: nothing killed it.
                assert _sleeping(there, session)
                assert victim_result == []
            finally:
                there.execute(f"kill query {session}")
                sleeper.join(10)
                victim.close()


def test_a_kill_through_a_proxy_to_the_same_server_stops_the_statement(
    tmp_path: Path, fleet: Sequence[MariaDB], relayed_user: str
) -> None:
    here = fleet[0]
    with Relay([here.port]) as relay:
        dsn = f"mysql+pymysql://{USER}:{relayed_user}@127.0.0.1:{relay.port}/probe"
        config = write_config(tmp_path, {"db": target(dsn, "sleepy")}, {"sleepy": SLEEPY})
        with client_for(config) as client:
            response = client.get("/probe", params={"target": "db"}, headers=DEADLINE)
            assert value(parse_samples(response.text), "probe_success") == 0.0
            # Killed soon after the deadline, not slept for 20 s.
            assert wait_until(
                lambda: not any(info and "sleep" in info for _, _, info in here.exporter_sessions(USER)), 5
            )
            assert "sqlprobe_kill_skipped_total{" not in client.get("/metrics").text


def test_a_failed_kill_is_logged_with_target_connection_id_and_reason(
    tmp_path: Path, fleet: Sequence[MariaDB], relayed_user: str, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    here = fleet[0]
    # The probe's connection reaches the server; the kill's finds the proxy's next backend down.
    with Relay([here.port, closed_port]) as relay:
        dsn = f"mysql+pymysql://{USER}:{relayed_user}@127.0.0.1:{relay.port}/probe"
        config = write_config(tmp_path, {"db": target(dsn, "sleepy")}, {"sleepy": SLEEPY})
        with client_for(config) as client:
            response = client.get("/probe", params={"target": "db"}, headers=DEADLINE)
            assert value(parse_samples(response.text), "probe_success") == 0.0
            assert wait_until(lambda: "could not stop" in caplog.text, 10)
            (session,) = [session for session, _, info in here.exporter_sessions(USER) if info and "sleep" in info]
    (failure,) = [record for record in caplog.records if "could not stop" in record.getMessage()]
    assert failure.levelname == "WARNING"
    assert failure.getMessage() == (
        f"could not stop the running query of target db (connection id {session}): "
        "OperationalError (2013, Lost connection to MySQL server during query)"
    )
    assert relayed_user not in caplog.text


def test_kills_wait_in_a_bounded_queue_one_per_connection_and_are_dropped_when_too_late(
    silent_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kills, "MAX_KILL_DELAY", 0.5)
    discarded: list[int] = []

    async def kill() -> None:
        # Each kill connects to a server that never answers: it fails after a second, holding its killer.
        async with asyncio.timeout(1):
            reader, writer = await asyncio.open_connection("127.0.0.1", silent_port)
            try:
                await reader.read(1)
            finally:
                writer.close()

    async def eventually(condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return condition()

    async def scenario() -> None:
        killer = kills.Killer()
        connections = [object() for _ in range(kills.KILLERS + kills.MAX_PENDING + 5)]
        try:
            for number, connection in enumerate(connections):
                for _ in range(2 if number < kills.KILLERS + kills.MAX_PENDING else 1):  # twice: once is enough
                    killer.request(connection, "db", number, kill, partial(discarded.append, number))
                if number < kills.KILLERS:
                    assert await eventually(lambda: len(killer._pending) == 0, 5)  # taken by a killer
            # Beyond the bound, refused at once and counted; each refused kill gives up the probe's connection instead.
            assert killer.skipped() == {"queue_full": 5}
            assert discarded == list(range(len(connections) - 5, len(connections)))
            # The waiting ones are dropped once it is too late for them (after the two under way failed).
            assert await eventually(lambda: killer.skipped().get("too_late") == kills.MAX_PENDING, 10)
            assert sorted(discarded) == list(range(kills.KILLERS, len(connections)))
            assert await eventually(lambda: caplog.text.count("could not stop the running query of target db") == 2, 5)
        finally:
            await killer.close(0)

    asyncio.run(scenario())


def _query(connection: Any, sql: str) -> Any:
    """The rows of ``sql``, or the error it ended with (a KILL QUERY makes sleep() fail with 1317)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    except pymysql.MySQLError as error:
        return error
