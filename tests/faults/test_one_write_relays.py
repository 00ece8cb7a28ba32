"""A probe's statements in one write (app/probe/pipelined.py) through a TCP relay that shapes what passes: each
statement still runs at most once per probe, and a stop lands only on the statement meant (counted in the server's
slow log, statement by statement)."""

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.servers import LoopbackServer, MariaDB, Relay
from tests.statement_log import runs_of, statement_log


class ShapingRelay(Relay):
    """Loopback TCP to ``upstream``; the server's first chunk of bytes holding ``late`` reaches the client
    ``delay`` seconds late (and what follows it with it)."""

    def __init__(self, upstream: int, late: bytes = b"", delay: float = 0.0) -> None:
        self._late = late
        self._delay = delay
        self.delayed = threading.Event()
        super().__init__(upstream)

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
        self._pump(server, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not from_client and self._late and self._late in data and not self.delayed.is_set():
                    self.delayed.set()
                    time.sleep(self._delay)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class ResetRefusingRelay(ShapingRelay):
    """Loopback TCP to ``upstream`` that answers COM_RESET_CONNECTION itself with the error an older server (MySQL
    before 5.7.3, MariaDB before 10.2.4) or a proxy without it gives, and passes the rest on; the first ``passed``
    resets reach the server (a failover behind a proxy, to an older server, comes later)."""

    def __init__(self, upstream: int, passed: int = 0) -> None:
        self.refused = threading.Event()
        self._passed = passed
        super().__init__(upstream)

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        if not from_client:
            super()._pump(source, sink, from_client)
            return
        pending = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                pending += data
                while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[:3], "little"):
                    size = int.from_bytes(pending[:3], "little")
                    packet, pending = pending[: 4 + size], pending[4 + size :]
                    if packet[3] == 0 and packet[4:] == bytes([0x1F]) and self._passed:
                        self._passed -= 1
                    elif packet[3] == 0 and packet[4:] == bytes([0x1F]):
                        self.refused.set()
                        error = b"\xff" + (1047).to_bytes(2, "little") + b"#08S01Unknown command"
                        source.sendall(len(error).to_bytes(3, "little") + b"\x01" + error)
                        continue  # the server never hears of it
                    sink.sendall(packet)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def relayed(server: MariaDB, relay: LoopbackServer) -> str:
    """The exporter's URL to ``server`` through ``relay``."""
    return server.dsn.replace(f":{server.port}/", f":{relay.port}/")


def probe_once(tmp_path: Path, dsn: str, metrics: dict[str, Any]) -> dict[Any, Any]:
    config = write_config(tmp_path, {"db": target(dsn, "set", timeout="15s")}, {"set": metrics})
    with client_for(config) as client:
        return parse_samples(client.get("/probe", params={"target": "db"}).text)


def test_a_stop_past_a_queries_timeout_lands_on_it_alone_when_its_answer_comes_late(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    late, third = f"l{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    metrics = {
        "first": metric("select 11 as first_value", "first_value"),
        # Done on the server in 0.3 s, within its timeout; its answer reaches sqlprobe 2.5 s late (a slow network),
        # past the timeout and its grace: sqlprobe sends KILL QUERY for it, by connection id.
        "second": {**metric(f"select sleep(0.3) as second_value, '{late}' as marker", "second_value"), "timeout": "1s"},
        # The server has gone on with the next statement of the write meanwhile: that is where the KILL lands.
        "third": metric(f"select sleep(3) as third_value, '{third}' as marker", "third_value"),
    }
    relay = ShapingRelay(server.port, late.encode(), 2.5)
    try:
        with statement_log(server):
            samples = probe_once(tmp_path, relayed(server, relay), metrics)
            third_runs = runs_of(server, third)
    finally:
        relay.close()
    assert relay.delayed.is_set()
    assert value(samples, "query_exporter_first") == 11.0
    assert value(samples, "query_exporter_third") == 0.0  # its sleep ran to its end
    assert third_runs == 1


def probes_through_refusals(
    tmp_path: Path, server: MariaDB, probes: int, passed: int = 0
) -> tuple[list[dict[Any, Any]], tuple[int, int]]:
    """``probes`` probes of two queries through a ResetRefusingRelay that lets ``passed`` resets through first;
    their samples, and how often each query ran on the server (slow log)."""
    first, second = f"f{secrets.token_hex(4)}", f"s{secrets.token_hex(4)}"
    metrics = {
        "first": metric(f"select 11 as first_value, '{first}' as marker", "first_value"),
        "second": metric(f"select 22 as second_value, '{second}' as marker", "second_value"),
    }
    relay = ResetRefusingRelay(server.port, passed=passed)
    config = write_config(tmp_path, {"db": target(relayed(server, relay), "set")}, {"set": metrics})
    try:
        with statement_log(server), client_for(config) as client:
            samples = [parse_samples(client.get("/probe", params={"target": "db"}).text) for _ in range(probes)]
            runs = runs_of(server, first), runs_of(server, second)
    finally:
        relay.close()
    assert relay.refused.is_set()
    return samples, runs


def test_a_servers_refusal_to_reset_a_pooled_session_runs_no_statement_twice(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    # The second probe takes the first one's pooled connection, whose reset the relay refuses: the probe takes a new
    # connection instead (docs/correctness.md), and its statements run there, once.
    probes, runs = probes_through_refusals(tmp_path, fleet[0], 2)
    for samples in probes:
        assert value(samples, "probe_success") == 1.0
        assert value(samples, "query_exporter_second") == 22.0
    assert runs == (2, 2)


def test_a_servers_refusal_to_reset_after_it_once_answered_runs_no_statement_twice(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    # The second probe's reset (a write of its own) reaches the server; the third's, in the probe's write, is
    # refused: the server behind the proxy changed.
    probes, runs = probes_through_refusals(tmp_path, fleet[1], 3, passed=1)
    for samples in probes:
        assert value(samples, "probe_success") == 1.0
    assert runs == (3, 3)
