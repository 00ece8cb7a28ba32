"""A read-only target runs only statements that read: the rest of queries.yml is refused at load, naming where."""

import asyncio
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from app.config.statements import WriteRefused
from app.drivers.mysql import fetch
from app.drivers.mysql_login import connect
from app.errors import ConfigError
from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import EXPORTER_USER, MariaDB

WRITER = "kinds_writer"
ROWS = 3
REFUSED = "refused on a read-only target"
ADVICE = "set read_only: false on the target"
LIFT = "set statement tx_read_only = 0 for"


@pytest.fixture
def scratch(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A table of ROWS rows, a procedure that commits a row into it, and a user that may change both."""
    server = fleet[1]
    server.execute(
        "create table probe.kinds (id int)",
        "insert into probe.kinds values " + ", ".join(f"({row})" for row in range(ROWS)),
        "create procedure probe.add_row() begin insert into probe.kinds values (99); commit; end",
        f"create user '{WRITER}'@'127.0.0.1' identified by '{server.password}'",
        f"grant select, insert, delete, create, drop on probe.* to '{WRITER}'@'127.0.0.1'",
        f"grant execute on procedure probe.add_row to '{WRITER}'@'127.0.0.1'",
    )
    yield server
    server.execute(
        "drop table probe.kinds",
        "drop table if exists probe.kinds2",
        "drop procedure probe.add_row",
        f"drop user '{WRITER}'@'127.0.0.1'",
    )


def _writer_dsn(server: MariaDB) -> str:
    return f"mysql+pymysql://{WRITER}:{server.password}@127.0.0.1:{server.port}/probe"


def _state(server: MariaDB) -> tuple[int, int]:
    """The rows in the table, and whether a second table was made."""
    ((rows,),) = server.root_query("select count(*) from probe.kinds")
    ((made,),) = server.root_query(
        "select count(*) from information_schema.tables where table_schema = 'probe' and table_name = 'kinds2'"
    )
    return int(rows), int(made)


def _line_of(path: Path, text: str) -> int:
    """The line of ``path`` that holds ``text`` first (1-based)."""
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _load_or_probe(directory: Path, targets: Mapping[str, Any], sets: Mapping[str, Any]) -> str | None:
    """The load's error, or (the config loaded) None once the target was probed as Prometheus would."""
    try:
        config = write_config(directory, targets, sets)
    except ConfigError as error:
        return str(error)
    with client_for(config) as client:
        client.get("/probe", params={"target": "db"})
    return None


MARIADB_WRITES = [
    f"{LIFT} truncate table kinds",
    f"{LIFT} create table kinds2 as select 1 as n",
    f"{LIFT} call add_row()",
    f"{LIFT} delete from kinds returning 1 as n",
    "set statement max_statement_time = 10 for truncate table kinds",
    "truncate table kinds",
    "call add_row()",
    "delete from kinds returning 1 as n",
    "insert into kinds values (7) returning 1 as n",
    "create table kinds2 as select 1 as n",
    "set session transaction read write",
    "check table kinds",
    "analyze table kinds",
    "do (select count(*) from kinds)",
    "handler kinds open",
    "select 1 as n into @x",
    f"/*! {LIFT} truncate table kinds */",
    f"/*!50000 {LIFT} truncate table kinds */",
    f"/*M!100000 {LIFT} truncate table kinds */",
    "select 1 as n /*!, (select 1) */ from dual",
    "-- note\n/* c */ # x\n  sEt StAtEmEnT Tx_Read_Only = 0 fOr TrUnCaTe TaBlE kinds",
    "set statement `tx_read_only` = 0 for select 1 as n",
    f"{LIFT} analyze select * from kinds",
    "set statement max_statement_time = 10 for analyze delete from kinds",
    "explain analyze delete from kinds",
    "(delete from kinds)",
]


@pytest.mark.parametrize("sql", MARIADB_WRITES)
def test_a_statement_that_does_not_only_read_is_refused_at_load_and_changes_nothing(
    tmp_path: Path, scratch: MariaDB, sql: str
) -> None:
    sets = {"writes": {"w": metric(sql, "n")}}
    refused = _load_or_probe(tmp_path, {"db": target(_writer_dsn(scratch), "writes")}, sets)
    assert _state(scratch) == (ROWS, 0)
    assert refused is not None, "loaded"
    line = _line_of(tmp_path / "queries.yml", "query:")
    assert f"{tmp_path / 'queries.yml'}:{line}: query_sets.writes.w.query: {REFUSED}: " in refused
    assert f"(read-only target: {tmp_path / 'targets.yml'}:" in refused
    assert ADVICE in refused


def test_the_exporter_cannot_change_its_own_password_with_the_grants_the_docs_recommend(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]  # the exporter user has SELECT and PROCESS; its own password needs no privilege
    sql = f"{LIFT} set password = password('changed-by-a-query')"
    try:
        refused = _load_or_probe(tmp_path, {"db": target(server.dsn, "writes")}, {"writes": {"w": metric(sql, "n")}})
        assert server.query("select 1") == [(1,)]  # the password still logs in
    finally:
        server.execute(f"set password for '{EXPORTER_USER}'@'127.0.0.1' = password('{server.password}')")
    assert refused is not None
    assert REFUSED in refused


READS = [
    "select count(*) as n from probe.kinds",
    "SELECT /*+ a hint */ count(*) AS n FROM probe.kinds",
    "-- a note\n# another\n/* a block */ select count(*) as n from probe.kinds",
    "with k as (select id from probe.kinds) select count(*) as n from k",
    "(select count(*) as n from probe.kinds) union (select -1 as n from dual where false)",
    "set statement max_statement_time = 10 for select count(*) as n from probe.kinds",
    "select count(*) as n from probe.kinds where id in (select id from probe.kinds) and 'a\\b' <> '/* x */ -- '",
    "select count(*) as n, insert('abc', 1, 1, 'x') as s, replace('a', 'a', 'b') as r from probe.kinds",
]


@pytest.mark.parametrize("sql", READS)
def test_a_statement_that_only_reads_runs_on_a_read_only_target(tmp_path: Path, scratch: MariaDB, sql: str) -> None:
    config = write_config(tmp_path, {"db": target(_writer_dsn(scratch), "reads")}, {"reads": {"r": metric(sql, "n")}})
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    expected = scratch.root_query(sql)[0][0]
    assert value(samples, "query_exporter_r") == float(expected)


def test_show_and_describe_run_on_a_read_only_target(tmp_path: Path, scratch: MariaDB) -> None:
    sets = {
        "reads": {
            "connections": metric("show global status like 'Threads_connected'", "Value"),
            "columns": metric("describe kinds", "Null") | {"labels": ["Field"], "value": None, "static_value": 1},
        }
    }
    config = write_config(tmp_path, {"db": target(_writer_dsn(scratch), "reads")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "probe_success") == 1.0
    assert value(samples, "query_exporter_columns", Field="id") == 1.0


def test_a_target_that_opts_out_of_read_only_may_run_any_statement(tmp_path: Path, scratch: MariaDB) -> None:
    targets = {"db": {**target(_writer_dsn(scratch), "writes"), "read_only": False}}
    config = write_config(tmp_path, targets, {"writes": {"w": metric("call add_row()", "n")}})
    with client_for(config) as client:
        client.get("/probe", params={"target": "db"})
    assert _state(scratch) == (ROWS + 1, 0)


def test_a_bound_value_that_would_hide_a_statement_is_refused_before_it_is_sent(scratch: MariaDB) -> None:
    # queries.yml's values are checked at load; the text the server would get is checked again before it is sent.
    hidden = f"*/ /*! {LIFT} truncate table kinds"

    async def send() -> tuple[str, object]:
        connection = await connect(
            host="127.0.0.1", port=scratch.port, user=WRITER, password=scratch.password, db="probe", autocommit=True
        )
        try:
            with pytest.raises(WriteRefused) as refused:
                await fetch(connection, "select %s as v", arguments=(hidden,), reads_only=True)
            return str(refused.value), await fetch(connection, "select %s as v", arguments=("plain",), reads_only=True)
        finally:
            connection.close()

    refusal, plain = asyncio.run(send())
    assert _state(scratch) == (ROWS, 0)
    assert refusal.startswith(f"sqlprobe did not send the statement: {REFUSED}: it holds an executable comment")
    assert plain == (("v",), [("plain",)])


def test_a_parameter_value_with_an_executable_comment_is_refused_at_load(tmp_path: Path, scratch: MariaDB) -> None:
    sets = {"values": {"v": metric("select 1 as n, :v as v", "n") | {"parameters": [{"v": "/*!50000 x */"}]}}}
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, {"db": target(_writer_dsn(scratch), "values")}, sets)
    assert f"query_sets.values.v.parameters: {REFUSED}: it holds an executable comment" in str(refused.value)


@pytest.fixture
def pg_scratch(postgres: PostgreSQL) -> Iterator[PostgreSQL]:
    """A table of ROWS rows the exporter user may change."""
    with postgres.superuser_connection() as connection:
        connection.execute("create table kinds (id int)")
        connection.execute("insert into kinds select generate_series(1, %s)", (ROWS,))
        connection.execute(f"grant select, insert, delete on kinds to {EXPORTER_USER}")
        connection.execute(f"grant create on schema public to {EXPORTER_USER}")
    yield postgres
    with postgres.superuser_connection() as connection:
        connection.execute("drop table kinds")
        connection.execute("drop table if exists kinds2")
        connection.execute(f"revoke create on schema public from {EXPORTER_USER}")


PG_READ = "select 1 as n /* a comment /* nested */ still */"  # a read: the control that the rest are refused as writes
POSTGRESQL_WRITES = [
    "with d as (delete from kinds returning 1) select count(*) as n from d",
    "with d as (insert into kinds values (7) returning 1) select count(*) as n from d",
    "with k as (select 1) delete from kinds returning 1 as n",
    "select * into kinds2 from kinds",
    "explain analyze delete from kinds",
    "explain (analyze, format json) insert into kinds values (7)",
    "create table kinds2 as select 1 as n",
    "do $$ begin delete from kinds; end $$",
    "select 1 as n; delete from kinds returning 1 as n",
    PG_READ,
]


@pytest.mark.parametrize("sql", POSTGRESQL_WRITES)
def test_a_postgresql_statement_that_does_not_only_read_is_refused_at_load(
    tmp_path: Path, pg_scratch: PostgreSQL, sql: str
) -> None:
    refused = _load_or_probe(tmp_path, {"db": target(pg_scratch.dsn, "writes")}, {"writes": {"w": metric(sql, "n")}})
    assert pg_scratch.superuser_query("select count(*) from kinds") == [(ROWS,)]
    assert pg_scratch.superuser_query("select to_regclass('kinds2') is null") == [(True,)]
    if sql == PG_READ:
        assert refused is None
    else:
        assert refused is not None
        assert f"query_sets.writes.w.query: {REFUSED}" in refused


def test_a_sqlite_target_without_a_read_only_transaction_deletes_nothing(tmp_path: Path) -> None:
    # SQLite runs without sqlprobe's read-only transaction: the statement's kind is the only wall.
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table kinds (id int)")
        connection.executemany("insert into kinds values (?)", [(row,) for row in range(ROWS)])
    sets = {"writes": {"w": metric("delete from kinds returning 1 as n", "n")}}
    refused = _load_or_probe(tmp_path, {"db": target(f"sqlite:///{database}", "writes")}, sets)
    with sqlite3.connect(database) as connection:
        assert connection.execute("select count(*) from kinds").fetchone() == (ROWS,)
    assert refused is not None
    assert REFUSED in refused


def test_each_refused_statement_is_named_with_its_target_and_the_rest_of_the_config_is_checked_too(
    tmp_path: Path, scratch: MariaDB
) -> None:
    sets = {"writes": {"w": metric("truncate table kinds", "n")}, "reads": {"r": metric("select 1 as n", "n")}}
    targets = {
        "db": target(_writer_dsn(scratch), "writes", "reads"),
        "other": target(_writer_dsn(scratch), "writes"),
        "rw": {**target(_writer_dsn(scratch), "writes"), "read_only": False},
    }
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, targets, sets)
    problems = [str(problem) for problem in refused.value.problems]
    assert len(problems) == 2
    assert all("TRUNCATE is not a statement that only reads" in problem for problem in problems)
    assert "targets.db.query_sets[0]" in problems[0]
    assert "targets.other.query_sets[0]" in problems[1]


# Texts the hostile review of #22 found accepted while the server read another statement in them.
PASSWORD_BYPASS = "set statement max_statement_time=1 --\x7f '\n, tx_read_only=0 for set password = password('x') #' for select 1 as n"


@pytest.mark.parametrize(
    "sql",
    [
        PASSWORD_BYPASS,  # MariaDB ends "--" before DEL, a control character: the quote after it is code
        "select 1 as n --\u00a0 from (select 1 as \u00a0) t into @x",  # U+00A0 is a letter of a name to MariaDB
        "set statement max_statement_time=1 --\r '\n, tx_read_only=0 for truncate table kinds #' for select 1 as n",
        f"select 1 as n\u200b, (select 1) {LIFT}",
    ],
    ids=["del-after-dashes", "nbsp-after-dashes", "lone-carriage-return", "zero-width-space"],
)
def test_a_character_servers_read_differently_is_refused_and_changes_nothing(
    tmp_path: Path, scratch: MariaDB, sql: str
) -> None:
    targets = {"db": target(_writer_dsn(scratch), "writes")}
    refused = _load_or_probe(tmp_path, targets, {"writes": {"w": metric(sql, "n")}})
    assert _state(scratch) == (ROWS, 0)
    assert refused is not None
    assert "which servers read differently from each other" in refused


def test_a_yen_sign_sent_as_a_backslash_under_sjis_is_refused_and_writes_nothing(
    tmp_path: Path, scratch: MariaDB
) -> None:
    # In sjis the yen sign goes out as 0x5C: the server reads a backslash that escapes the quote after it, and what
    # the text holds as a string is code.
    sql = "select 1 as n, :a as a, ' , 1 into @x -- ' as b"
    sets = {"writes": {"w": metric(sql, "n") | {"parameters": [{"a": "\u00a5"}]}}}
    refused = _load_or_probe(tmp_path, {"db": target(_writer_dsn(scratch) + "?charset=sjis", "writes")}, sets)
    assert refused is not None
    assert "query_sets.writes.w.parameters: refused on a read-only target: in the DSN's charset (shift_jis)" in refused


def test_a_yen_sign_bound_under_sjis_is_refused_before_it_is_sent(scratch: MariaDB) -> None:
    async def send() -> str:
        connection = await connect(
            host="127.0.0.1", port=scratch.port, user=WRITER, password=scratch.password, db="probe", charset="sjis"
        )
        try:
            with pytest.raises(WriteRefused) as refused:
                await fetch(
                    connection, "select %s as a, ' , 1 into @x -- ' as b", arguments=("\u00a5",), reads_only=True
                )
            return str(refused.value)
        finally:
            connection.close()

    assert "SELECT … INTO writes" in asyncio.run(send())


@pytest.mark.parametrize(
    "sql",
    [
        "with \u017felect as (select 1) delete from kinds",  # the long s upper-cases to S in Python, not in SQLite
        "with values as (select 1) delete from kinds",
        "select * from pragma_optimize",
    ],
)
def test_a_sqlite_statement_that_hides_a_write_is_refused(tmp_path: Path, sql: str) -> None:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table kinds (id int)")
        connection.executemany("insert into kinds values (?)", [(row,) for row in range(ROWS)])
        connection.execute("create index kinds_id on kinds (id)")
        connection.execute("select count(*) from kinds where id = 1").fetchall()
    refused = _load_or_probe(
        tmp_path, {"db": target(f"sqlite:///{database}", "writes")}, {"writes": {"w": metric(sql, "n")}}
    )
    with sqlite3.connect(database) as connection:
        assert connection.execute("select count(*) from kinds").fetchone() == (ROWS,)
        assert connection.execute("select count(*) from sqlite_master where name = 'sqlite_stat1'").fetchone() == (0,)
    assert refused is not None
    assert REFUSED in refused


def test_a_postgresql_comment_ended_by_a_carriage_return_is_refused(tmp_path: Path, pg_scratch: PostgreSQL) -> None:
    # PostgreSQL ends "--" at a carriage return: the COPY after it ran, inside BEGIN READ ONLY.
    sql = "-- \rcopy (select 1) to '/tmp/sqlprobe-never-written' /*\nselect 1 as n */"
    refused = _load_or_probe(tmp_path, {"db": target(pg_scratch.dsn, "writes")}, {"writes": {"w": metric(sql, "n")}})
    assert not Path("/tmp/sqlprobe-never-written").exists()
    assert refused is not None
    assert "U+000D" in refused


@pytest.mark.parametrize(
    "sql",
    [
        "with " * 2000 + "select 1 as n",
        "set statement max_statement_time=1 for " * 400 + "select 1 as n",
        "select " + "(select " * 5000 + "1" + ")" * 5000 + " as n",
    ],
    ids=["with", "set-statement", "parentheses"],
)
def test_a_statement_nested_too_deep_is_refused_with_a_sentence(tmp_path: Path, scratch: MariaDB, sql: str) -> None:
    with pytest.raises(ConfigError) as refused:
        write_config(tmp_path, {"db": target(_writer_dsn(scratch), "deep")}, {"deep": {"d": metric(sql, "n")}})
    assert "nests" in str(refused.value)


@pytest.mark.parametrize(
    "sql",
    [
        "select 'it\\'s' as s, count(*) as n from probe.kinds",
        'select count(*) as n from probe.kinds where \'a"b\' <> "a\\"b"',
        "checksum table probe.kinds",
    ],
)
def test_a_read_that_one_sql_mode_would_not_parse_still_runs(tmp_path: Path, scratch: MariaDB, sql: str) -> None:
    value_column = "Checksum" if sql.startswith("checksum") else "n"
    sets = {"reads": {"r": metric(sql, value_column)}}
    config = write_config(tmp_path, {"db": target(_writer_dsn(scratch), "reads")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    rows = scratch.root_query(sql)
    expected = rows[0][1] if value_column == "Checksum" else rows[0][-1]
    assert value(samples, "query_exporter_r") == float(expected)
