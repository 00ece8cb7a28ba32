"""A network partition in the middle of a probe: the probe answers by its deadline and frees its connection soon after.

The partition is made for real, by a TCP relay on loopback that forwards to the database server until it sees a
marker in what the exporter sends (or, where the exporter sends a probe's statements in one write, in what the server
answers), and from then on forwards nothing, in either direction, on any connection, while keeping every socket open
(as a peer behind a dead link does).
"""

import contextlib
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

SCRAPE_TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
BUDGET = 2.5  # what sqlprobe makes of a 3 s scrape timeout
# How long after the deadline the exporter may hold the connection: the 1 s the issue allows, and a margin for a
# loaded machine (the code before the fix held it about 2 s past the deadline here, or for ever on PostgreSQL).
CLOSED_WITHIN = BUDGET + 1.0 + 0.75
# Seconds the relay goes on passing the server's answer after the one holding the marker (in_answer).
ANSWER_TAIL = 0.1


class SilentRelay:
    """Loopback TCP to ``port`` that goes silent for good once a client sends ``marker`` (with ``in_answer``: once
    the server's answer holding it has been passed on)."""

    def __init__(self, port: int, marker: bytes, in_answer: bool = False) -> None:
        self._upstream = port
        self._marker = marker
        self._in_answer = in_answer
        self.silent = threading.Event()
        self.closed = threading.Event()  # the first client connection was closed by the client
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._first: socket.socket | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            if self._first is None:
                self._first = client
            upstream = None if self.silent.is_set() else socket.create_connection(("127.0.0.1", self._upstream))
            if upstream is not None:
                self._sockets.append(upstream)
                threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket | None, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if from_client and source is self._first:
                    self.closed.set()
                return
            if from_client and not self._in_answer and self._marker in data:
                self.silent.set()
            if self.silent.is_set() or sink is None:
                continue  # read and dropped: the other side never hears of it
            try:
                sink.sendall(data)
            except OSError:
                return
            if not from_client and self._in_answer and self._marker in data:
                # The rest of that answer may come in the next read: silent a moment later (before the next answer).
                threading.Timer(ANSWER_TAIL, self.silent.set).start()

    def close(self) -> None:
        """Close every socket of the relay, so that the server ends the sessions the exporter left behind."""
        for sock in self._sockets:
            # Shut down first: close() alone leaves the connection open while a pump thread waits in recv().
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def silent_relay(port: int, marker: str, in_answer: bool = False) -> Iterator[SilentRelay]:
    """A SilentRelay to ``port``, closed after the block."""
    relay = SilentRelay(port, marker.encode(), in_answer)
    try:
        yield relay
    finally:
        relay.close()


def _probe_until_closed(
    tmp_path: Path, dsn: str, sets: Mapping[str, object], closed: threading.Event
) -> tuple[str, float, bool, float]:
    """Probe ``dsn``: the answer, its seconds, and whether (and after how long) ``closed`` was set in CLOSED_WITHIN."""
    config = write_config(tmp_path, {"db": target(dsn, "two")}, {"two": sets})
    with client_for(config) as client:
        started = time.monotonic()
        response = client.get("/probe", params={"target": "db"}, headers=SCRAPE_TIMEOUT)
        answered = time.monotonic() - started
        was_closed = closed.wait(max(0.0, started + CLOSED_WITHIN - time.monotonic()))
        return response.text, answered, was_closed, time.monotonic() - started


def _probe_through_partition(tmp_path: Path, dsn: str, relay: SilentRelay, sets: Mapping[str, object]) -> None:
    text, answered, closed, closed_after = _probe_until_closed(tmp_path, dsn, sets, relay.closed)
    assert relay.silent.is_set()  # the partition did happen, after the first statement
    samples = parse_samples(text)
    assert value(samples, "sqlprobe_query_success", metric="first") == 1.0
    assert value(samples, "sqlprobe_query_success", metric="second") == 0.0
    assert value(samples, "probe_success") == 0.0
    assert answered < 3  # before Prometheus's scrape timeout
    assert closed, f"the exporter still held its connection {closed_after:.1f}s after the probe started"


def test_a_partition_after_the_first_statement_frees_the_mariadb_connection_soon_after_the_deadline(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    marker = "partition_" + secrets.token_hex(6)
    sets = {
        # Most of the budget: a socket timeout counted from the checkout, and restarted on each read, would wait
        # the whole budget again for the second statement. Both statements reach the server in one write: the
        # partition comes once the first one's answer (which holds the marker) has reached sqlprobe, while the
        # second still runs.
        "first": metric(f"select sleep(2) as slept, '{marker}' as marker", "slept"),
        "second": metric(f"select sleep({4 * ANSWER_TAIL}) + 2 as two", "two"),
    }
    with silent_relay(server.port, marker, in_answer=True) as relay:
        dsn = server.dsn.replace(f":{server.port}/", f":{relay.port}/")
        _probe_through_partition(tmp_path, dsn, relay, sets)


def test_a_partition_after_the_first_statement_frees_the_postgresql_connection_soon_after_the_deadline(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    marker = "partition_" + secrets.token_hex(6)
    sets = {
        "first": metric("select pg_sleep(2)::text = '' as slept", "slept"),
        "second": metric(f"select 2 as two /* {marker} */", "two"),
    }
    with silent_relay(postgres.port, marker) as relay:
        dsn = postgres.dsn.replace(f":{postgres.port}/", f":{relay.port}/")
        _probe_through_partition(tmp_path, dsn, relay, sets)


class TricklingServer:
    """Loopback TCP where every connection is answered with the start of a packet, then one byte at a time (each
    sooner than any socket timeout), for at most ``seconds``: a server that never finishes its handshake."""

    def __init__(self, first: bytes, every: float, seconds: float) -> None:
        self._first, self._every, self._seconds = first, every, seconds
        self.closed = threading.Event()  # the first client connection was closed by the client
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return  # closed
        with client:
            until = time.monotonic() + self._seconds
            try:
                client.sendall(self._first)
                while time.monotonic() < until:
                    readable, _, _ = select.select([client], [], [], self._every)
                    if readable and not client.recv(1024):  # what the client sends is read and dropped
                        break
                    client.sendall(b"\x00")
                else:
                    return  # the client held on to the end
            except OSError:
                pass  # reset by the client
            self.closed.set()

    def close(self) -> None:
        """Stop accepting (the connection ends when its trickle does)."""
        self._listener.close()


def test_a_mariadb_handshake_that_trickles_frees_its_thread_soon_after_the_deadline(tmp_path: Path) -> None:
    # A greeting's header that announces 80 bytes, then a byte every 0.3 s: every read is answered before its
    # socket timeout, so a timeout counted per read never ends the handshake.
    server = TricklingServer(b"\x50\x00\x00\x00\x0a", every=0.3, seconds=CLOSED_WITHIN + 8)
    try:
        dsn = f"mysql+pymysql://exporter:secret@127.0.0.1:{server.port}/probe"
        sets = {"one": metric("select 1 as n", "n")}
        text, answered, closed, closed_after = _probe_until_closed(tmp_path, dsn, sets, server.closed)
    finally:
        server.close()
    assert value(parse_samples(text), "probe_success") == 0.0
    assert answered < 3  # before Prometheus's scrape timeout
    assert closed, f"the exporter still held its connection {closed_after:.1f}s after the probe started"
