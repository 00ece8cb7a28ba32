"""Every session of the exporter is read-only unless a target opts out: SQL in queries.yml cannot change data."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
import pytest

from app.config.statements import SEVERAL_STATEMENTS
from app.drivers.dialect import DEADLINE_GRACE
from app.errors import ConfigError
from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, write_config
from tests.servers import MariaDB

WRITER = "writer"
ROWS = 3
# A SELECT is a read by its kind, but the functions it calls may write: the read-only transaction stops them.
WRITES = {
    "writes": {
        "deleted": metric("select probe.delete_rows() as n", "n"),
        "inserted": metric("select probe.insert_row() as n", "n"),
    }
}


@pytest.fixture
def scratch(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A table of ROWS rows and a user that may change it."""
    server = fleet[1]
    server.execute(
        "create table probe.scratch (id int)",
        "insert into probe.scratch values " + ", ".join(f"({row})" for row in range(ROWS)),
        "create function probe.delete_rows() returns int sql security invoker"
        " begin delete from probe.scratch; return 1; end",
        "create function probe.insert_row() returns int sql security invoker"
        " begin insert into probe.scratch values (99); return 1; end",
        f"create user '{WRITER}'@'127.0.0.1' identified by '{server.password}'",
        f"grant select, insert, delete, execute on probe.* to '{WRITER}'@'127.0.0.1'",
    )
    yield server
    server.execute(
        "drop table probe.scratch",
        "drop function probe.delete_rows",
        "drop function probe.insert_row",
        f"drop user '{WRITER}'@'127.0.0.1'",
    )


def _writer_dsn(server: MariaDB) -> str:
    return f"mysql+pymysql://{WRITER}:{server.password}@127.0.0.1:{server.port}/probe"


def _count(server: MariaDB) -> int:
    ((count,),) = server.root_query("select count(*) from probe.scratch")
    return int(count)


def test_writes_in_queries_change_nothing_even_for_a_user_allowed_to_write(tmp_path: Path, scratch: MariaDB) -> None:
    # The user can delete: in a transaction of its own, rolled back.
    connection = pymysql.connect(
        host="127.0.0.1", port=scratch.port, user=WRITER, password=scratch.password, database="probe"
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("select delete_rows()")
        assert cursor.execute("select * from scratch") == 0
        connection.rollback()
    config = write_config(tmp_path, {"db": target(_writer_dsn(scratch), "writes")}, WRITES)
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "probe_success") == 0.0
    assert views.debug.count("Cannot execute statement in a READ ONLY transaction") == 2
    assert _count(scratch) == ROWS


def test_a_target_may_opt_out_of_read_only(tmp_path: Path, scratch: MariaDB) -> None:
    targets = {"db": {**target(_writer_dsn(scratch), "writes"), "read_only": False}}
    config = write_config(tmp_path, targets, {"writes": {"deleted": WRITES["writes"]["deleted"]}})
    with client_for(config) as client:
        samples = probe_views(client, "db").samples
    assert value(samples, "probe_success") == 1.0
    assert _count(scratch) == 0


SESSION_CHECKS = {
    "quoted": "select @@session.sql_mode like '%ANSI_QUOTES%' as quoted",
    "in_probe": "select database() = 'probe' as in_probe",
}


def test_session_settings_made_by_a_statement_do_not_outlive_it(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sets = {
        "turn": {
            "mode": metric("set session sql_mode = 'ANSI_QUOTES'", "n"),
            "other_db": metric("use information_schema", "n"),
        },
        "check": {name: metric(sql, name) for name, sql in SESSION_CHECKS.items()},
    }
    # Statements that change the session run only on a target that is not read-only.
    config = write_config(tmp_path, {"db": {**target(server.dsn, "turn", "check"), "read_only": False}}, sets)
    with client_for(config) as client:
        client.get("/probe", params={"target": "db", "query_set": "turn"})
        later = parse_samples(client.get("/probe", params={"target": "db", "query_set": "check"}).text)
        same = parse_samples(client.get("/probe", params={"target": "db"}).text)
    for name, sql in SESSION_CHECKS.items():
        ((expected,),) = server.query(sql)
        assert value(later, f"query_exporter_{name}") == float(expected), name
        assert value(same, f"query_exporter_{name}") == float(expected), name


def test_a_mariadb_session_cut_off_inside_its_read_only_transaction_ends_soon_after_any_deadline(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select @@session.idle_readonly_transaction_timeout as seconds"
    config = write_config(
        tmp_path, {"db": target(server.dsn, "idle", timeout="3s")}, {"idle": {"t": metric(sql, "seconds")}}
    )
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    # The target's timeout (no probe waits longer) and the grace, in whole seconds; the server's default is none.
    assert value(samples, "query_exporter_t") == 3 + DEADLINE_GRACE
    assert server.query(sql) == [(0,)]


def test_a_named_lock_taken_by_a_statement_is_not_held_after_the_probe(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sets = {"lock": {"locked": metric("select get_lock('sqlprobe_leftover', 0) as n", "n")}}
    config = write_config(tmp_path, {"db": target(server.dsn, "lock")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert value(samples, "query_exporter_locked") == 1.0
        # Another session (the operator's job) can take it while sqlprobe's connection waits in the pool.
        assert server.query("select is_free_lock('sqlprobe_leftover')") == [(1,)]


def test_user_variables_set_by_a_statement_do_not_reach_the_next_probe(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select @sqlprobe_n := coalesce(@sqlprobe_n, 0) + 1 as n"
    config = write_config(tmp_path, {"db": target(server.dsn, "count")}, {"count": {"n": metric(sql, "n")}})
    with client_for(config) as client:
        for _ in range(3):
            samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "query_exporter_n") == 1.0


LIFTED_DELETE = "set statement tx_read_only = 0 for delete from scratch returning 1 as n"


@pytest.mark.parametrize("charset", ["sjis", "ujis"])
def test_a_parameter_value_that_would_end_its_string_is_refused_and_writes_nothing(
    tmp_path: Path, scratch: MariaDB, charset: str
) -> None:
    # In sjis and ujis, Python encodes the yen sign as the byte of a backslash: escaped as a character, it escapes
    # the quote the driver's escaping put after it, and the rest of the value is SQL (its ';' a separator).
    breakout = "\u00a5';commit;" + LIFTED_DELETE.replace(" returning 1 as n", "") + " #"
    sets = {"values": {"v": metric("select 1 as n, :v as v", "n") | {"parameters": [{"v": breakout}]}}}
    dsn = _writer_dsn(scratch) + f"?charset={charset}"
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, {"db": target(dsn, "values")}, sets)
    assert SEVERAL_STATEMENTS in str(refused.value)
    assert _count(scratch) == ROWS
