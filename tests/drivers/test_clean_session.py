"""Each probe gets the pooled session as new: nothing an earlier probe's statements left is seen, and sqlprobe's own
settings (read-only, lock-wait bounds, the idle timeout) hold on every probe, not only on the first of a connection."""

from collections.abc import Sequence
from pathlib import Path

from app.drivers.dialect import DEADLINE_GRACE
from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.servers import EXPORTER_USER, MariaDB

# The session's settings as sqlprobe makes them, and the connection's id: one row, read on every probe.
SETTINGS = (
    "select connection_id() as id, @@session.tx_read_only as read_only, @@session.lock_wait_timeout as lock_wait,"
    " @@session.innodb_lock_wait_timeout as row_lock_wait, @@session.idle_readonly_transaction_timeout as idle,"
    " @@session.autocommit as autocommit, @@session.character_set_client = @@character_set_connection as charset"
)
COLUMNS = ("id", "read_only", "lock_wait", "row_lock_wait", "idle", "autocommit", "charset")


def test_a_reused_session_keeps_sqlprobes_settings_and_its_connection(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sets = {"s": {column: metric(SETTINGS, column) for column in COLUMNS}}
    config = write_config(tmp_path, {"db": {**target(server.dsn, "s", timeout="5s"), "lock_wait_timeout": "3s"}}, sets)
    with client_for(config) as client:
        probes = [parse_samples(client.get("/probe", params={"target": "db"}).text) for _ in range(3)]
    first = value(probes[0], "query_exporter_id")
    for samples in probes:
        # The same connection every time: the session was reset, not replaced by a new one.
        assert value(samples, "query_exporter_id") == first
        assert value(samples, "query_exporter_read_only") == 1.0
        assert value(samples, "query_exporter_lock_wait") == 3.0
        assert value(samples, "query_exporter_row_lock_wait") == 3.0
        assert value(samples, "query_exporter_idle") == 5 + DEADLINE_GRACE
        assert value(samples, "query_exporter_autocommit") == 1.0
        assert value(samples, "query_exporter_charset") == 1.0
    # What a session of the server gets by default: none of it is sqlprobe's.
    assert server.query("select @@session.lock_wait_timeout, @@session.tx_read_only") != [(3, 1)]


def test_a_temporary_table_does_not_reach_the_next_probe(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    # A procedure leaves both behind, and answers with a row (a writable target may call it).
    server.execute(
        "create or replace procedure probe.leave_state() sql security invoker begin"
        " create temporary table if not exists probe.leftover (n int);"
        " insert into probe.leftover values (1);"
        " select count(*) as n from probe.leftover; end",
        f"grant execute on procedure probe.leave_state to '{EXPORTER_USER}'@'127.0.0.1'",
        f"grant create temporary tables on probe.* to '{EXPORTER_USER}'@'127.0.0.1'",
    )
    sets = {"s": {"n": metric("call probe.leave_state()", "n")}}
    config = write_config(tmp_path, {"db": {**target(server.dsn, "s"), "read_only": False}}, sets)
    with client_for(config) as client:
        counts = [value(parse_samples(client.get("/probe", params={"target": "db"}).text), "query_exporter_n")]
        counts += [value(parse_samples(client.get("/probe", params={"target": "db"}).text), "query_exporter_n")]
    assert counts == [1.0, 1.0]
