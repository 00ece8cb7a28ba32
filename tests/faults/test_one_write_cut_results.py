"""A result cut at its rows' bound in a probe's one write (app/drivers/mysql_pipeline.py: Pipe._drained), where
what follows the cut is not the result's end: the statement's error, the connection's loss, more bytes than
sqlprobe reads on. The probe's later queries still run, once each (counted in the server's slow log)."""

import contextlib
import secrets
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.faults.test_one_write_relays import probe_once, relayed
from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.servers import MariaDB, Relay
from tests.statement_log import runs_of, statement_log


class CuttingRelay(Relay):
    """Loopback TCP to ``upstream`` that passes the server's bytes up to the row holding ``cut`` (its packet's
    first byte, no more) and closes both sides there."""

    def __init__(self, upstream: int, cut: bytes) -> None:
        self._cut = cut
        self.cut = threading.Event()
        super().__init__(upstream)

    def relay(self, connection: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self._to_server, args=(connection, upstream), daemon=True).start()
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if self._cut in data and not self.cut.is_set():
                    self.cut.set()
                    # A row packet: 4 bytes of header, then its length-coded cells ("\x01" "4", "\x07" "ROW4END").
                    connection.sendall(data[: data.index(self._cut) - 6])
                    connection.shutdown(socket.SHUT_RDWR)
                    upstream.shutdown(socket.SHUT_RDWR)
                    return
                connection.sendall(data)

    def _to_server(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)


def test_a_query_after_one_whose_cut_result_ends_in_an_error_runs_once(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    second = f"s{secrets.token_hex(4)}"
    metrics = {
        # Rows 1-3 come, then the server fails the statement (the subquery gives two rows from the fourth on):
        # sqlprobe reads 3 rows (max_rows and one more), and finds the error as it reads on to the result's end.
        "first": {
            **metric(
                "select seq as first_value, (select 1 union all select 1 from dual where seq > 3) as n"
                " from seq_1_to_10",
                "first_value",
                "n",
            ),
            "max_rows": 2,
        },
        "second": metric(f"select 22 as second_value, '{second}' as marker", "second_value"),
    }
    with statement_log(server):
        samples = probe_once(tmp_path, server.dsn, metrics)
        runs = runs_of(server, second)
    # Before, the second query waited for an answer the server would never send, to the probe's deadline.
    assert value(samples, "query_exporter_second") == 22.0
    assert runs == 1


def test_a_query_after_one_whose_connection_is_lost_while_its_cut_result_is_read_on_runs_on_a_new_one(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    metrics = {
        "first": {
            **metric("select seq as first_value, concat('ROW', seq, 'END') as n from seq_1_to_10", "first_value", "n"),
            "max_rows": 2,
        },
        "second": metric("select 22 as second_value", "second_value"),
    }
    # sqlprobe reads 3 rows; the connection is lost in the fourth, as it reads on to the result's end.
    relay = CuttingRelay(server.port, b"ROW4END")
    try:
        samples = probe_once(tmp_path, relayed(server, relay), metrics)
    finally:
        relay.close()
    assert relay.cut.is_set()
    assert value(samples, "query_exporter_second") == 22.0


def test_a_query_after_a_result_cut_past_what_sqlprobe_reads_on_runs_once(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    second = f"s{secrets.token_hex(4)}"
    metrics = {
        # 0.3 MiB of rows past the bound: more than the 256 KiB sqlprobe reads on to find the result's end, less
        # than loopback's socket buffers hold, so the server has sent it whole and gone on with the next statement
        # by the time sqlprobe closes the connection.
        "first": {
            **metric("select seq as first_value, repeat('x', 2000) as pad from seq_1_to_150", "first_value"),
            "max_rows": 1,
        },
        "second": metric(f"select 22 as second_value, '{second}' as marker", "second_value"),
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "set")}, {"set": metrics})
    with statement_log(server), client_for(config) as client:
        # The second probe's write ends after the long result (sqlprobe learnt it): closed under it, unread.
        probes = [parse_samples(client.get("/probe", params={"target": "db"}).text) for _ in range(2)]
        runs = runs_of(server, second)
    for samples in probes:
        assert value(samples, "query_exporter_first") == 1.0
        assert value(samples, "query_exporter_second") == 22.0
    assert runs == 2
