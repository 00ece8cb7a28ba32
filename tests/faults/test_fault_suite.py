"""Faults as a user meets them: sqlprobe started as its own process, probed over HTTP, real MariaDB failing under it.

Every case also checks what must not happen: a password or a Traceback in sqlprobe's log, and leaked
threads, connections or server sessions.
"""

import math
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pymysql
import pytest

from tests.helpers import Samples, metric, parse_samples, target, value, wait_until
from tests.served import Served, serve
from tests.servers import EXPORTER_USER, MariaDB, mariadb_fleet

SCRAPE_TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}
QUICK_SET = {"one": metric("select 1 as one", "one")}
# A user of its own that fills the server's connection slots (no password, no grants: only USAGE).
HOG_USER = "hog"


def assert_log_clean(served: Served, *passwords: str) -> None:
    """sqlprobe's log holds no password and no Traceback."""
    log = served.log.read_text()
    assert "Traceback" not in log, log
    for password in passwords:
        assert password not in log


def debug_probe(served: Served, name: str, **params: str) -> tuple[str, float]:
    """The debug page of one probe of ``name``, and the probe_success it reports."""
    response = httpx.get(
        f"{served.url}/probe", params={"target": name, "debug": "true", **params}, headers=SCRAPE_TIMEOUT, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.text, value(parse_samples(response.text.split("\nmetrics:\n", 1)[1]), "probe_success")


def probe_samples(served: Served, name: str, **params: str) -> Samples:
    """The samples of one probe of ``name``."""
    response = httpx.get(f"{served.url}/probe", params={"target": name, **params}, headers=SCRAPE_TIMEOUT, timeout=30)
    assert response.status_code == 200, response.text
    return parse_samples(response.text)


def thread_count(pid: int) -> int:
    """Threads of process ``pid`` right now."""
    found = re.search(r"^Threads:\s+(\d+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found[1])


def connections_to(pid: int, *ports: int) -> int:
    """TCP sockets process ``pid`` holds open to any of ``ports`` (what `ss -tnp` shows, read from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            count += remote_port in ports and fields[9] in inodes
    return count


def p99(samples: Sequence[float]) -> float:
    """The 99th percentile by nearest rank: of 100 samples, the second largest."""
    return sorted(samples)[math.ceil(0.99 * len(samples)) - 1]


# --- 1. A partition: hung targets beside healthy ones --------------------------------------------------------
# At a data centre's scale, 2,000 silent targets beside 200 healthy ones, in tests/e2e/test_silence.py.


@dataclass(frozen=True)
class Answer:
    """One probe as the client saw it."""

    success: float
    sent: float
    received: float

    @property
    def latency(self) -> float:
        """Seconds from sending the request to having the whole answer."""
        return self.received - self.sent


# --- 2 to 5: faults on a server of our own, which they may kill, reconfigure and restart ----------------------


@pytest.fixture(scope="module")
def own_server(mariadb_paths: tuple[str, str]) -> Iterator[MariaDB]:
    """A throwaway MariaDB server for this module alone: killing a session-wide one would disturb other tests."""
    with mariadb_fleet(1, mariadb_paths) as (server,):
        server.execute(f"create user '{HOG_USER}'@'127.0.0.1'")
        yield server


@pytest.fixture
def server(own_server: MariaDB, mariadb_paths: tuple[str, str]) -> Iterator[MariaDB]:
    """The module's server, running and as set up, whatever the previous test did to it."""
    if own_server.process is None or own_server.process.poll() is not None:
        own_server.start(mariadb_paths[0])
    ((max_connections,),) = own_server.root_query("select @@global.max_connections")
    yield own_server
    if own_server.process is None or own_server.process.poll() is not None:
        own_server.start(mariadb_paths[0])
    own_server.execute(
        f"alter user '{EXPORTER_USER}'@'127.0.0.1' identified by '{own_server.password}'",
        f"set global max_connections = {max_connections}",
    )


def sleepy_set(seconds: float) -> dict[str, Any]:
    """A query set whose one metric sleeps ``seconds`` on the server (its value is 0 when the sleep ended normally)."""
    return {"slept": metric(f"select sleep({seconds}) as slept", "slept")}


def sessions_running(server: MariaDB, sql: str) -> int:
    """Sessions of the exporter user running ``sql`` now."""
    return sum(1 for _, _, info in server.exporter_sessions() if info == sql)


def wait_for_sessions(server: MariaDB, sql: str, count: int, seconds: float) -> None:
    """Wait, polling fast, until ``count`` exporter sessions run ``sql``."""
    deadline = time.monotonic() + seconds
    while sessions_running(server, sql) < count:
        assert time.monotonic() < deadline, server.exporter_sessions()
        time.sleep(0.02)


def test_server_killed_mid_query_answers_at_once_and_the_first_probe_after_its_restart_succeeds(
    tmp_path: Path, server: MariaDB, mariadb_paths: tuple[str, str]
) -> None:
    sleepy = sleepy_set(5)
    targets = {"db": target(server.dsn, "sleepy", "quick")}
    with serve(tmp_path, targets, {"sleepy": sleepy, "quick": QUICK_SET}) as served, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(debug_probe, served, "db", query_set="sleepy")
        wait_for_sessions(server, sleepy["slept"]["query"], 1, 5)
        killed = time.monotonic()
        server.stop(signal.SIGKILL)
        report, success = in_flight.result(timeout=15)
        answered = time.monotonic() - killed
        # At once: not when the sleep would have ended (5 s) nor at the deadline (9.5 s).
        assert answered < 2, answered
        assert success == 0.0
        # The connection was lost mid-query (2013). The probe then tries a fresh connection, as it does for a stale
        # pooled one, and the dying server resets it (2013) or, gone, refuses it (2003): which one is a race.
        assert re.search(r"\n(connection failed \(connect\)|  error \(query\)): \((2013|2003), ", report), report
        assert "probe_success: 0" in report

        server.start(mariadb_paths[0])
        up = probe_samples(served, "db", query_set="quick")
        assert value(up, "probe_success") == 1.0
        assert value(up, "query_exporter_one") == 1.0
    assert_log_clean(served, server.password)


# MariaDB's smallest max_connections; root keeps one more slot for itself.
MAX_CONNECTIONS = 10


def fill_connection_slots(server: MariaDB, held: ExitStack) -> int:
    """Take every connection slot as another user, keeping them open until ``held`` closes; how many were taken."""
    for taken in range(MAX_CONNECTIONS + 1):
        try:
            connection = pymysql.connect(host="127.0.0.1", port=server.port, user=HOG_USER)
        except pymysql.err.OperationalError as error:
            if error.args[0] != 1040:  # Too many connections
                raise
            return taken
        held.callback(connection.close)
    raise AssertionError(f"the server took more than max_connections ({MAX_CONNECTIONS}) connections")


def test_server_out_of_connections_fails_the_probe_with_the_servers_error_until_freed(
    tmp_path: Path, server: MariaDB
) -> None:
    with serve(tmp_path, {"db": target(server.dsn, "quick")}, {"quick": QUICK_SET}) as served, ExitStack() as held:
        server.execute(f"set global max_connections = {MAX_CONNECTIONS}")
        assert fill_connection_slots(server, held) > 0
        report, success = debug_probe(served, "db")
        assert success == 0.0
        assert "connection failed (connect): (1040, 'Too many connections')" in report, report

        held.close()
        assert value(probe_samples(served, "db"), "probe_success") == 1.0
    assert_log_clean(served, server.password)


def test_password_changed_under_the_exporter_fails_once_its_sessions_end_and_recovers_when_restored(
    tmp_path: Path, server: MariaDB
) -> None:
    new_password = "changed-" + secrets.token_hex(8)
    exporter = f"'{EXPORTER_USER}'@'127.0.0.1'"
    with serve(tmp_path, {"db": target(server.dsn, "quick")}, {"quick": QUICK_SET}) as served:
        assert value(probe_samples(served, "db"), "probe_success") == 1.0
        server.execute(f"alter user {exporter} identified by '{new_password}'")
        # A session keeps working after its user's password changed: the pooled connection still serves.
        assert value(probe_samples(served, "db"), "probe_success") == 1.0

        server.execute(*(f"kill connection {session}" for session, _, _ in server.exporter_sessions()))
        assert wait_until(lambda: server.exporter_sessions() == [], 5), server.exporter_sessions()
        report, success = debug_probe(served, "db")
        assert success == 0.0
        assert "connection failed (connect): (1045, \"Access denied for user 'exporter'@'127.0.0.1'" in report, report
        plain = httpx.get(f"{served.url}/probe", params={"target": "db"}, headers=SCRAPE_TIMEOUT).text
        for output in (report, plain):
            assert server.password not in output
            assert new_password not in output

        server.execute(f"alter user {exporter} identified by '{server.password}'")
        assert value(probe_samples(served, "db"), "probe_success") == 1.0
    assert_log_clean(served, server.password, new_password)


def aborted_clients(server: MariaDB) -> int:
    """Connections the server saw end without a proper goodbye (COM_QUIT)."""
    ((_, count),) = server.root_query("show global status like 'Aborted_clients'")
    return int(count)


IN_FLIGHT = 6


def test_sigterm_lets_probes_in_flight_finish_then_closes_every_connection(tmp_path: Path, server: MariaDB) -> None:
    sleepy = sleepy_set(1)
    targets = {f"db-{index}": target(server.dsn, "sleepy", "quick") for index in range(IN_FLIGHT)}
    with (
        serve(tmp_path, targets, {"sleepy": sleepy, "quick": QUICK_SET}) as served,
        ThreadPoolExecutor(IN_FLIGHT) as pool,
    ):
        # Pooled connections first, so that every probe below starts its sleep at once.
        for name in targets:
            assert value(probe_samples(served, name, query_set="quick"), "probe_success") == 1.0
        in_flight = [pool.submit(probe_samples, served, name, query_set="sleepy") for name in targets]
        wait_for_sessions(server, sleepy["slept"]["query"], IN_FLIGHT, 0.9)
        aborted_before = aborted_clients(server)
        served.process.send_signal(signal.SIGTERM)
        # Each probe in flight gets its whole answer, and its sleep ran to the end (SLEEP() gives 1 if killed).
        for probe in in_flight:
            samples = probe.result(timeout=15)
            assert value(samples, "probe_success") == 1.0
            assert value(samples, "query_exporter_slept") == 0.0
        assert served.process.wait(15) == 0
    # The engines were disposed: every connection said goodbye to the server rather than being cut by the exit.
    assert wait_until(lambda: server.exporter_sessions() == [], 5), server.exporter_sessions()
    assert aborted_clients(server) == aborted_before
    assert_log_clean(served, server.password)
