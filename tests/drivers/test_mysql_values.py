"""app/drivers/mysql.py's fetch reads on an aiomysql connection what PyMySQL's cursor reads, and fails as it fails, on a real
MariaDB server.

PyMySQL's cursor is the reference: every expected value here is what the cursor returns for the same SQL on the
same server, never a value written into the test. One difference is sqlprobe's own: a BIT(n) cell is the number it
is, where PyMySQL's cursor gives its bytes; the reference turns those into the number (big-endian, as sent).
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pytest
from pymysql.constants import CR, FIELD_TYPE
from sqlalchemy.engine import make_url

from app.config import Target
from app.drivers import mysql, mysql_login
from app.drivers.dialect import Fetched
from tests.helpers import client_for, metric, probe_views, target, value, wait_until, write_config
from tests.relay import Relay
from tests.servers import EXPORTER_USER, MariaDB

T = TypeVar("T")

TYPES_TABLE = "probe.value_types"
COLUMNS = {
    "tiny": "tinyint",
    "big": "bigint unsigned",
    "amount": "decimal(30,10)",
    "flo": "float",
    "dbl": "double",
    "short_text": "varchar(300) character set utf8mb4",
    "long_text": "mediumtext character set utf8mb4",
    "latin_text": "varchar(300) character set latin1",
    "bin": "varbinary(300)",
    "blob_": "mediumblob",
    "day": "date",
    "moment": "datetime(6)",
    "span": "time(3)",
    "yr": "year",
    "bits": "bit(12)",
    "wide_bits": "bit(64)",
    "choice": "enum('a','b')",
    "choices": "set('x','y')",
    "doc": "json",
}
ROWS = [
    "(-128, 18446744073709551615, -12345678901234567890.0123456789, 1.5, 2.25e300, 'héllo ünïcode ✓ 𝄞',"
    " repeat('long ✓', 20000), 'café à la crème', x'00ff10', repeat(x'00ff', 40000), '2024-02-29',"
    " '2024-02-29 23:59:59.123456', '-838:59:58.999', 2155, b'101010101010', b'1' << 63, 'b', 'x,y',"
    " '{\"a\": [1, 2.5, null]}')",
    "(" + ", ".join(["null"] * len(COLUMNS)) + ")",
    "(0, 0, 0, 0, 0, '', '', '', '', '', '1000-01-01', '1000-01-01 00:00:00', '00:00:00', 1901, b'0', b'0', 'a', '',"
    " '[]')",
    # A string of 250 bytes and one of 251: the last length in one byte, and the first in three.
    "(1, 1, 1, -1, -1, repeat('a', 250), repeat('b', 251), repeat('é', 251), repeat(x'01', 250), repeat(x'02', 251),"
    " '2000-01-01', '2000-01-01 00:00:00', '12:00:00', 2000, b'1', ~0, 'a', 'x', '{}')",
]
SLEEP = "select sleep(30)"
# Without a results charset the server sends the latin-1 byte é as it is: not UTF-8.
UNDECODABLE = "select _latin1 0xE9 as cell, seq as v from seq_1_to_3"


@pytest.fixture(scope="module")
def server(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A fleet server with a table of every kind of column, and a procedure with two results."""
    server = fleet[0]
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    server.execute(
        f"drop table if exists {TYPES_TABLE}",
        f"create table {TYPES_TABLE} ({columns})",
        f"insert into {TYPES_TABLE} values {', '.join(ROWS)}",
        "drop procedure if exists probe.two_results",
        # A second result larger than one read from the socket: it must be drained, not left for the next statement.
        "create procedure probe.two_results()"
        " begin select 1 as first; select seq, repeat('x', 1000) as pad from seq_1_to_1000; end",
        f"grant execute on procedure probe.two_results to '{EXPORTER_USER}'@'127.0.0.1'",
        # A result with a cell that cannot be decoded, from a probe: sqlprobe's sessions read results in UTF-8
        # (SQLAlchemy sets the names on connect), and this is how a statement gets the server to send raw latin-1.
        "drop procedure if exists probe.undecodable",
        f"create procedure probe.undecodable() begin set character_set_results = null; {UNDECODABLE}; end",
        f"grant execute on procedure probe.undecodable to '{EXPORTER_USER}'@'127.0.0.1'",
    )
    yield server
    server.execute(f"drop table {TYPES_TABLE}", "drop procedure probe.two_results", "drop procedure probe.undecodable")


def on_connection(server: MariaDB, steps: Callable[[Any], Awaitable[T]], port: int | None = None, **url_args: Any) -> T:
    """``steps`` on a new aiomysql connection made as sqlprobe makes it (to ``port``, a relay, if given; with the
    DSN's ``url_args``, a charset say)."""

    async def run() -> T:
        target = Target(
            name="db",
            url=make_url(server.dsn),
            query_sets=(),
            labels={},
            timeout=10.0,
            tls=None,
            read_only=False,
            queries=(),
            metrics=(),
        )
        connection = await mysql_login.connect(
            host="127.0.0.1",
            port=port or server.port,
            user=EXPORTER_USER,
            password=server.password,
            db="probe",
            autocommit=True,  # as sqlprobe's engines (AUTOCOMMIT) and the reference connection
            **url_args,
            **mysql.connect_args(target),
        )
        try:
            return await steps(connection)
        finally:
            connection.close()

    return asyncio.run(run())


def fetched(server: MariaDB, sql: str) -> Fetched:
    """What app.mysql.fetch reads for ``sql`` on a new connection."""
    return on_connection(server, lambda connection: mysql.fetch(connection, sql))


def cursor_reads(connection: Any, sql: str) -> Fetched:
    """What PyMySQL's cursor reads for ``sql`` (its columns and rows; None without a result set), BIT as numbers."""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        if cursor.description is None:
            return None
        bits = [column[1] == FIELD_TYPE.BIT for column in cursor.description]
        rows = [
            tuple(
                int.from_bytes(cell, "big") if bit and cell is not None else cell
                for cell, bit in zip(row, bits, strict=True)
            )
            for row in cursor.fetchall()
        ]
        return tuple(column[0] for column in cursor.description), rows


def expected(server: MariaDB, sql: str) -> Fetched:
    """What PyMySQL's cursor reads for ``sql`` on a new connection of the exporter user."""
    connection = server.exporter_connection()
    try:
        return cursor_reads(connection, sql)
    finally:
        connection.close()


@pytest.mark.parametrize(
    "sql",
    [
        f"select * from {TYPES_TABLE}",
        "select 1 as `one`, 'a' as `Mixed Case ✓`, null as nothing, 2.5 as dec_literal, 1e3 as dbl_literal",
        "select json_object('k', 1) as doc, cast(x'ff' as binary) as raw, now(6) - now(6) as zero",
        "select convert('café' using latin1) as latin, convert('ü' using ucs2) as ucs, _binary 'é' as raw_text",
        "show global status like 'Uptime'",
        "select command, count(*) sessions from information_schema.processlist group by command",
        f"select * from {TYPES_TABLE} where 1 = 0",
    ],
)
def test_columns_and_values_equal_what_pymysqls_cursor_reads(server: MariaDB, sql: str) -> None:
    reference = expected(server, sql)
    assert reference is not None
    assert fetched(server, sql) == reference


def test_a_result_larger_than_many_reads_equals_the_cursors(server: MariaDB) -> None:
    sql = "select seq, repeat('x', seq % 700) as pad, seq / 7 as ratio from seq_1_to_20000"
    reference = expected(server, sql)
    assert reference is not None
    assert len(reference[1]) == 20000
    assert fetched(server, sql) == reference


def test_cells_longer_than_a_read_and_than_a_packet_equal_the_cursors(server: MariaDB) -> None:
    # A packet holds at most 16 MiB: a longer row continues in the next ones. The server must allow it (its default
    # max_allowed_packet is 16 MiB, too small for such a row).
    (previous,) = server.root_query("select @@global.max_allowed_packet")[0]
    server.execute(f"set global max_allowed_packet = {64 * 2**20}")
    try:
        for size in (5 * 2**20, 2**24 - 10, 20 * 2**20):
            sql = f"select {size} as size, repeat('é', {size // 2}) as text_, repeat(x'7f', {size}) as raw"
            reference = expected(server, sql)
            assert reference is not None
            assert reference[1][0][2] is not None  # not NULL: the server did send a cell of that size
            assert fetched(server, sql) == reference
    finally:
        server.execute(f"set global max_allowed_packet = {previous}")


def test_a_statement_without_a_result_set_gives_none_and_the_connection_goes_on(server: MariaDB) -> None:
    async def steps(connection: Any) -> list[Fetched]:
        return [
            await mysql.fetch(connection, "do 1"),
            await mysql.fetch(connection, "set @seen = 41"),
            await mysql.fetch(connection, "select @seen + 1 as answer"),
        ]

    reference_connection = server.exporter_connection()
    try:
        reference = [cursor_reads(reference_connection, sql) for sql in ("do 1", "set @seen = 41")]
        reference.append(cursor_reads(reference_connection, "select @seen + 1 as answer"))
    finally:
        reference_connection.close()
    assert reference[:2] == [None, None]
    assert on_connection(server, steps) == reference


def test_a_server_error_is_pymysqls_exception_and_the_connection_goes_on(server: MariaDB) -> None:
    sql = "select * from probe.no_such_table"
    reference_connection = server.exporter_connection()
    try:
        with pytest.raises(pymysql.err.ProgrammingError) as reference:
            cursor_reads(reference_connection, sql)
        after = cursor_reads(reference_connection, "select 7 as seven")
    finally:
        reference_connection.close()

    async def steps(connection: Any) -> tuple[BaseException, Fetched]:
        with pytest.raises(pymysql.err.MySQLError) as raised:
            await mysql.fetch(connection, sql)
        return raised.value, await mysql.fetch(connection, "select 7 as seven")

    error, then = on_connection(server, steps)
    assert (type(error), error.args) == (type(reference.value), reference.value.args)
    assert then == after


def test_an_error_inside_a_result_set_is_raised_not_a_short_result(server: MariaDB) -> None:
    # The columns are described, then the subquery returns two rows for seq 3: error 1242 ends the result.
    sql = "select seq, (select inner_.seq from seq_1_to_2 inner_ where outer_.seq > 2) as v from seq_1_to_5 outer_"
    reference_connection = server.exporter_connection()
    try:
        with pytest.raises(pymysql.err.MySQLError) as reference:
            cursor_reads(reference_connection, sql)
        after = cursor_reads(reference_connection, "select 'next' as after")
    finally:
        reference_connection.close()

    async def steps(connection: Any) -> tuple[BaseException, Fetched]:
        with pytest.raises(pymysql.err.MySQLError) as raised:
            await mysql.fetch(connection, sql)
        return raised.value, await mysql.fetch(connection, "select 'next' as after")

    error, then = on_connection(server, steps)
    assert (type(error), error.args) == (type(reference.value), reference.value.args)
    assert then == after  # nothing of the failed result is left for the next statement


def test_a_cell_that_cannot_be_decoded_fails_as_with_pymysqls_cursor(server: MariaDB) -> None:
    reference_connection = server.exporter_connection()
    try:
        assert cursor_reads(reference_connection, "set character_set_results = null") is None
        with pytest.raises(UnicodeDecodeError) as reference:
            cursor_reads(reference_connection, UNDECODABLE)
    finally:
        reference_connection.close()

    async def steps(connection: Any) -> BaseException:
        assert await mysql.fetch(connection, "set character_set_results = null") is None
        with pytest.raises(UnicodeDecodeError) as raised:
            await mysql.fetch(connection, UNDECODABLE)
        return raised.value

    error = on_connection(server, steps)
    assert (type(error), error.args) == (type(reference.value), reference.value.args)


def test_a_query_whose_cell_cannot_be_decoded_fails_without_quoting_it_and_its_connection_is_closed(
    tmp_path: Path, server: MariaDB
) -> None:
    # The undecodable result comes between two queries that name the session they ran on.
    query_sets = {
        "cells": {
            "before": metric("select connection_id() as session_before", "session_before"),
            "unreadable": metric("call probe.undecodable()", "v", "cell"),
            "after": metric("select connection_id() as session_after", "session_after"),
        }
    }
    # A procedure's result: only a target that is not read-only may CALL.
    targets = {"db": {**target(server.dsn, "cells"), "read_only": False}}
    config = write_config(tmp_path, targets, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    debug, samples = views.debug, views.samples
    assert "could not read the result (UnicodeDecodeError" in debug
    assert "0xe9" not in debug.lower()  # the decoder's message quotes the cell: a value of the data, left out
    assert value(samples, "sqlprobe_query_success", metric="unreadable") == 0.0
    # The rest of its result was never read: the query after it ran on a new connection, the old one closed.
    before, after = value(samples, "before"), value(samples, "after")
    assert before != after
    assert wait_until(lambda: int(before) not in {session for session, _, _ in server.exporter_sessions()}, 10)


def test_a_procedures_first_result_is_read_and_the_rest_drained(server: MariaDB) -> None:
    reference = expected(server, "call probe.two_results()")
    assert reference is not None

    async def steps(connection: Any) -> tuple[Fetched, Fetched]:
        first = await mysql.fetch(connection, "call probe.two_results()")
        # Nothing of the second result is left on the socket for the next statement to read.
        return first, await mysql.fetch(connection, "select 'next' as after")

    assert on_connection(server, steps) == (reference, expected(server, "select 'next' as after"))


def test_max_rows_bounds_the_first_result_and_a_later_larger_one_is_drained_not_cut(server: MariaDB) -> None:
    reference = expected(server, "call probe.two_results()")
    assert reference is not None
    # The first result (1 row) is within the bound; the second (1,000 rows) is read and dropped, row by row.
    max_rows = len(reference[1]) + 4

    async def steps(connection: Any) -> tuple[Fetched, Fetched, bool]:
        first = await mysql.fetch(connection, "call probe.two_results()", max_rows)
        return first, await mysql.fetch(connection, "select 'next' as after", max_rows), connection.closed

    assert on_connection(server, steps) == (reference, expected(server, "select 'next' as after"), False)


def test_a_result_over_max_rows_is_cut_there_and_the_connection_closed(server: MariaDB) -> None:
    sql = "select seq from seq_1_to_100000"
    reference = expected(server, sql)
    assert reference is not None

    async def steps(connection: Any) -> tuple[Fetched, bool]:
        return await mysql.fetch(connection, sql, 11), connection.closed

    read, closed = on_connection(server, steps)
    assert read == (reference[0], reference[1][:11])
    # The rest was never read: the connection is closed, so the server stops sending and the pool drops it.
    assert closed


def test_a_text_of_several_statements_is_refused_before_it_is_sent_and_the_connection_goes_on(server: MariaDB) -> None:
    # The session runs several statements in one text (sqlprobe's own follow the probe's): a ';' inside a query
    # is refused, even in a string or a comment, where the server would not split; a trailing one is dropped.
    refused = ["select 1 as one; select 2 as two", "select ';' as semicolon", "select 1 as one /* ; */"]
    trailing = "select 1 as one ;  "
    reference = expected(server, trailing.rstrip().rstrip(";"))

    async def steps(connection: Any) -> tuple[list[BaseException], Fetched]:
        errors: list[BaseException] = []
        for sql in refused:
            with pytest.raises(mysql.SeveralStatements) as raised:
                await mysql.fetch(connection, sql)
            errors.append(raised.value)
        return errors, await mysql.fetch(connection, trailing)

    errors, after = on_connection(server, steps)
    assert [error.args[0] for error in errors] == [1064] * len(refused)
    assert after == reference


@pytest.mark.parametrize("charset", ["sjis", "ujis"])
def test_a_value_that_would_end_its_string_under_the_connection_charset_is_refused_before_it_is_sent(
    server: MariaDB, charset: str
) -> None:
    # In sjis and ujis Python writes the yen sign as a backslash's byte: escaped as a character, it escapes the
    # quote the escaping put after it, and the rest of the value is SQL, its ';' a separator.
    breakout = "\u00a5';select 2 as two #"

    async def steps(connection: Any) -> Fetched:
        with pytest.raises(mysql.SeveralStatements):
            await mysql.fetch(connection, "select %s as v", arguments=[breakout])
        return await mysql.fetch(connection, "select 1 as one")

    assert on_connection(server, steps, charset=charset) == expected(server, "select 1 as one")


def test_a_killed_query_and_a_killed_session_fail_as_with_pymysqls_cursor(server: MariaDB) -> None:
    # Each outcome: the error class and code, then what the next statement on the same connection gives.
    outcomes: dict[tuple[str, str], tuple[str, tuple[Any, ...], str]] = {}
    for how in ("query", "connection"):
        connection = server.exporter_connection()
        killer = threading.Thread(target=_kill_soon, args=(server, how, connection.thread_id()))
        killer.start()
        try:
            with pytest.raises(pymysql.err.MySQLError) as reference:
                cursor_reads(connection, SLEEP)
        finally:
            killer.join()
        try:
            outcomes[how, "cursor"] = (type(reference.value).__name__, reference.value.args[:1], _next(connection))
        finally:
            connection.close()

        async def steps(connection: Any, how: str = how) -> tuple[str, tuple[Any, ...], str]:
            killer = asyncio.create_task(asyncio.to_thread(_kill_soon, server, how, connection.thread_id()))
            try:
                with pytest.raises(pymysql.err.MySQLError) as raised:
                    await mysql.fetch(connection, SLEEP)
            finally:
                await killer
            try:
                after = repr(await mysql.fetch(connection, "select 1 as one"))
            except pymysql.err.MySQLError as error:
                after = type(error).__name__
            return type(raised.value).__name__, raised.value.args[:1], after

        outcomes[how, "aiomysql"] = on_connection(server, steps)
        assert outcomes[how, "aiomysql"] == outcomes[how, "cursor"]
    # The two faults differ: the query's kill leaves the session, the session's does not.
    assert outcomes["query", "aiomysql"] != outcomes["connection", "aiomysql"]


def _next(connection: Any) -> str:
    """What a statement after a failed one gives on ``connection``: its result, or its error's class."""
    try:
        return repr(cursor_reads(connection, "select 1 as one"))
    except pymysql.err.MySQLError as error:
        return type(error).__name__


def _end_session(server: MariaDB, session: int) -> None:
    """End a session that its client gave up on: other tests count the exporter user's sessions."""
    with contextlib.suppress(pymysql.err.MySQLError):
        server.execute(f"kill connection {session}")


def _kill_soon(server: MariaDB, how: str, session: int) -> None:
    if _wait_running(server, session):
        server.execute(f"kill {how} {session}")


def _wait_running(server: MariaDB, session: int) -> bool:
    """Wait until ``session`` runs its sleep on ``server``; False if it never does within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = server.root_query(
            f"select count(*) from information_schema.processlist where id = {session} and info like 'select sleep%'"
        )
        if running[0][0]:
            return True
        time.sleep(0.05)
    return False


def test_a_connection_cut_mid_query_is_lost_as_with_pymysqls_cursor(server: MariaDB) -> None:
    outcomes: dict[str, tuple[Any, bool]] = {}
    with Relay([server.port]) as link:
        connection = pymysql.connect(
            host="127.0.0.1", port=link.port, user=EXPORTER_USER, password=server.password, autocommit=True
        )
        cutter = threading.Thread(target=_cut_when_running, args=(server, connection.thread_id(), link))
        cutter.start()
        try:
            with pytest.raises(pymysql.err.OperationalError) as reference:
                cursor_reads(connection, SLEEP)
        finally:
            cutter.join()
            _end_session(server, connection.thread_id())
        outcomes["cursor"] = (reference.value.args[0], not connection.open)

    async def steps(connection: Any) -> tuple[Any, bool]:
        cutter = asyncio.create_task(asyncio.to_thread(_cut_when_running, server, connection.thread_id(), link))
        try:
            with pytest.raises(pymysql.err.OperationalError) as raised:
                await mysql.fetch(connection, SLEEP)
        finally:
            await cutter
            _end_session(server, connection.thread_id())
        return raised.value.args[0], connection.closed  # closed: never handed out again

    with Relay([server.port]) as link:
        outcomes["aiomysql"] = on_connection(server, steps, port=link.port)
    assert outcomes["aiomysql"] == outcomes["cursor"] == (CR.CR_SERVER_LOST, True)


def _cut_when_running(server: MariaDB, session: int, link: Relay) -> None:
    if _wait_running(server, session):
        link.cut()
