"""app/mysql_wire.py reads what PyMySQL's cursor reads, and fails as it fails, on a real MariaDB server.

PyMySQL's cursor is the reference: every expected value here is what the cursor returns for the same SQL on
the same server, never a value written into the test.
"""

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pymysql
import pytest
from app.engines import fetch_with_cursor
from sqlalchemy import create_engine

from app import mysql_wire
from tests.relay import Relay
from tests.servers import MariaDB

TYPES_TABLE = "probe.wire_types"
COLUMNS = {
    "tiny": "tinyint",
    "big": "bigint unsigned",
    "amount": "decimal(30,10)",
    "flo": "float",
    "dbl": "double",
    "short_text": "varchar(300) character set utf8mb4",
    "long_text": "mediumtext character set utf8mb4",
    "bin": "varbinary(300)",
    "blob_": "mediumblob",
    "day": "date",
    "moment": "datetime(6)",
    "span": "time(3)",
    "yr": "year",
    "bits": "bit(12)",
    "choice": "enum('a','b')",
    "choices": "set('x','y')",
    "doc": "json",
}
ROWS = [
    "(-128, 18446744073709551615, -12345678901234567890.0123456789, 1.5, 2.25e300, 'héllo ünïcode ✓',"
    " repeat('long ✓', 20000), x'00ff10', repeat(x'00ff', 40000), '2024-02-29', '2024-02-29 23:59:59.123456',"
    " '-838:59:58.999', 2155, b'101010101010', 'b', 'x,y', '{\"a\": [1, 2.5, null]}')",
    "(" + ", ".join(["null"] * len(COLUMNS)) + ")",
    "(0, 0, 0, 0, 0, '', '', '', '', '1000-01-01', '1000-01-01 00:00:00', '00:00:00', 1901, b'0', 'a', '', '[]')",
    # A string of 250 bytes and one of 251: the last length in one byte, and the first in three.
    "(1, 1, 1, -1, -1, repeat('a', 250), repeat('b', 251), repeat(x'01', 250), repeat(x'02', 251),"
    " '2000-01-01', '2000-01-01 00:00:00', '12:00:00', 2000, b'1', 'a', 'x', '{}')",
]


@pytest.fixture(scope="module")
def server(fleet: Sequence[MariaDB]) -> MariaDB:
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
        "grant execute on procedure probe.two_results to 'exporter'@'127.0.0.1'",
    )
    return server


@pytest.fixture
def connection(server: MariaDB) -> Iterator[Any]:
    """A PyMySQL connection as the exporter user."""
    connection = server.exporter_connection()
    yield connection
    connection.close()


@pytest.mark.parametrize(
    "sql",
    [
        f"select * from {TYPES_TABLE}",
        "select 1 as `one`, 'a' as `Mixed Case ✓`, null as nothing, 2.5 as dec_literal, 1e3 as dbl_literal",
        "select json_object('k', 1) as doc, cast(x'ff' as binary) as raw, now(6) - now(6) as zero",
        "show global status like 'Uptime'",
        "select command, count(*) sessions from information_schema.processlist group by command",
        f"select * from {TYPES_TABLE} where 1 = 0",
    ],
)
def test_columns_and_values_equal_what_pymysqls_cursor_reads(connection: Any, sql: str) -> None:
    expected = fetch_with_cursor(connection, sql)
    assert expected is not None
    assert mysql_wire.fetch(connection, sql) == (expected[0], list(expected[1]))


def test_a_result_larger_than_many_reads_equals_the_cursors(connection: Any) -> None:
    sql = "select seq, repeat('x', seq % 700) as pad, seq / 7 as ratio from seq_1_to_20000"
    expected = fetch_with_cursor(connection, sql)
    assert expected is not None
    assert len(expected[1]) == 20000
    assert mysql_wire.fetch(connection, sql) == (expected[0], list(expected[1]))


def test_cells_longer_than_a_read_and_than_a_packet_equal_the_cursors(server: MariaDB) -> None:
    # A packet holds at most 16 MiB: a longer row continues in the next ones. The server must allow it.
    (previous,) = server.root_query("select @@global.max_allowed_packet")[0]
    server.execute(f"set global max_allowed_packet = {64 * 2**20}")
    connection = server.exporter_connection()
    try:
        for size in (5 * 2**20, 2**24 - 10, 20 * 2**20):
            sql = f"select {size} as size, repeat('é', {size // 2}) as text_, repeat(x'7f', {size}) as raw"
            expected = fetch_with_cursor(connection, sql)
            assert expected is not None
            assert expected[1][0][2] is not None  # not NULL: the server did send a cell of that size
            assert mysql_wire.fetch(connection, sql) == (expected[0], list(expected[1]))
    finally:
        connection.close()
        server.execute(f"set global max_allowed_packet = {previous}")


def test_a_statement_without_a_result_set_gives_none_and_the_connection_goes_on(connection: Any) -> None:
    assert mysql_wire.fetch(connection, "do 1") is None
    assert mysql_wire.fetch(connection, "set @seen = 41") is None
    assert mysql_wire.fetch(connection, "select @seen + 1 as answer") == (("answer",), [(42,)])
    # What PyMySQL reads from the server's status after each statement follows these statements too.
    assert mysql_wire.fetch(connection, "set autocommit = 0") is None
    assert connection.get_autocommit() is False


def test_a_server_error_is_pymysqls_exception_and_the_connection_goes_on(connection: Any) -> None:
    with pytest.raises(pymysql.err.ProgrammingError) as expected:
        fetch_with_cursor(connection, "select * from probe.no_such_table")
    with pytest.raises(pymysql.err.ProgrammingError) as raised:
        mysql_wire.fetch(connection, "select * from probe.no_such_table")
    assert raised.value.args == expected.value.args
    assert mysql_wire.fetch(connection, "select 7 as seven") == (("seven",), [(7,)])


def test_statements_sent_before_and_after_in_one_write_run_in_order_and_errors_come_after_every_answer(
    connection: Any,
) -> None:
    assert mysql_wire.fetch(connection, "select @@in_transaction as open", "start transaction read only") == (
        ("open",),
        [(1,)],
    )
    assert mysql_wire.fetch(connection, "select 2 as two", after="commit") == (("two",), [(2,)])
    assert mysql_wire.fetch(connection, "select @@in_transaction as open") == (("open",), [(0,)])
    # The statement fails: its error is raised once the answers after it were read, so the connection goes on.
    with pytest.raises(pymysql.err.ProgrammingError) as expected:
        fetch_with_cursor(connection, "select * from probe.no_such_table")
    with pytest.raises(pymysql.err.ProgrammingError) as raised:
        mysql_wire.fetch(connection, "select * from probe.no_such_table", "set @before = 1", "set @after = 2")
    assert raised.value.args == expected.value.args
    assert mysql_wire.fetch(connection, "select @before + @after as both_ran") == (("both_ran",), [(3,)])


def test_an_error_inside_a_result_set_is_raised_not_a_short_result(connection: Any) -> None:
    # The columns are described, then the subquery returns two rows for seq 3: error 1242 ends the result.
    sql = "select seq, (select inner_.seq from seq_1_to_2 inner_ where outer_.seq > 2) as v from seq_1_to_5 outer_"
    with pytest.raises(pymysql.err.MySQLError) as expected:
        fetch_with_cursor(connection, sql)
    with pytest.raises(pymysql.err.MySQLError) as raised:
        mysql_wire.fetch(connection, sql)
    assert (type(raised.value), raised.value.args) == (type(expected.value), expected.value.args)


def test_a_cell_that_cannot_be_decoded_closes_the_connection_as_a_disconnect(connection: Any) -> None:
    # Without a results charset the server sends the latin-1 byte é as it is: not UTF-8. PyMySQL's cursor would
    # raise UnicodeDecodeError and leave the rest of the response on the socket for the next statement to misread.
    assert mysql_wire.fetch(connection, "set character_set_results = null") is None
    with pytest.raises(pymysql.err.OperationalError) as raised:
        mysql_wire.fetch(connection, "select _latin1 0xE9 as cell, seq from seq_1_to_3")
    assert "UnicodeDecodeError" in raised.value.args[1]
    assert "0xe9" not in raised.value.args[1]  # the decoder's message, which quotes the cell, is left out
    assert connection._sock is None
    # So the pool replaces the connection instead of handing it out again.
    dialect = create_engine("mysql+pymysql://").dialect
    assert dialect.is_disconnect(raised.value, connection, None)


def test_a_procedures_first_result_is_read_and_the_rest_drained(connection: Any) -> None:
    expected = fetch_with_cursor(connection, "call probe.two_results()")
    assert expected is not None
    assert mysql_wire.fetch(connection, "call probe.two_results()") == (expected[0], list(expected[1]))
    # Nothing of the second result is left on the socket for the next statement to read.
    assert mysql_wire.fetch(connection, "select 'next' as after") == (("after",), [("next",)])


def test_max_rows_bounds_the_first_result_and_a_later_larger_one_is_drained_not_cut(connection: Any) -> None:
    expected = fetch_with_cursor(connection, "call probe.two_results()")
    assert expected is not None
    # The first result (1 row) is within the bound; the second (1,000 rows) is read and dropped, row by row.
    assert mysql_wire.fetch(connection, "call probe.two_results()", max_rows=5) == (expected[0], list(expected[1]))
    assert mysql_wire.fetch(connection, "select 'next' as after", max_rows=5) == (("after",), [("next",)])


def test_a_result_over_max_rows_is_cut_there_and_the_connection_closed(connection: Any) -> None:
    fetched = mysql_wire.fetch(connection, "select seq from seq_1_to_100000", max_rows=11)
    assert fetched == (("seq",), [(i,) for i in range(1, 12)])
    # The rest was never read: the connection is closed, so the server stops sending and the pool drops it.
    assert connection._sock is None


def test_a_read_timeout_is_a_lost_connection_as_with_pymysql(connection: Any, server: MariaDB) -> None:
    connection._read_timeout = 0.5
    try:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            mysql_wire.fetch(connection, "select sleep(5)")
    finally:
        _end_session(server, connection.thread_id())
    assert raised.value.args[0] == pymysql.constants.CR.CR_SERVER_LOST
    assert connection._sock is None  # never used again: the server may still answer on it
    with pytest.raises(pymysql.err.InterfaceError):
        mysql_wire.fetch(connection, "select 1")


def test_a_killed_query_and_a_killed_session_fail_as_with_pymysqls_cursor(server: MariaDB) -> None:
    outcomes = {}
    for how in ("query", "connection"):
        for name, fetch in (("cursor", fetch_with_cursor), ("wire", mysql_wire.fetch)):
            connection = server.exporter_connection()
            killer = threading.Thread(target=_kill_soon, args=(server, how, connection.thread_id()))
            killer.start()
            try:
                fetch(connection, "select sleep(30)")
                outcomes[how, name] = ("no error", ())
            except pymysql.err.MySQLError as error:
                outcomes[how, name] = (type(error).__name__, error.args[:1])
            finally:
                killer.join()
                connection.close()
        assert outcomes[how, "wire"] == outcomes[how, "cursor"]
    # The two faults differ: the query's kill leaves the session, the session's does not.
    assert outcomes["query", "wire"] != outcomes["connection", "wire"]


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
    outcomes = {}
    for name, fetch in (("cursor", fetch_with_cursor), ("wire", mysql_wire.fetch)):
        with Relay([server.port]) as link:
            connection = pymysql.connect(
                host="127.0.0.1", port=link.port, user="exporter", password=server.password, autocommit=True
            )
            cutter = threading.Thread(target=_cut_when_running, args=(server, connection.thread_id(), link))
            cutter.start()
            try:
                with pytest.raises(pymysql.err.OperationalError) as raised:
                    fetch(connection, "select sleep(30)")
            finally:
                cutter.join()
                _end_session(server, connection.thread_id())
            outcomes[name] = raised.value.args[0]
            assert connection._sock is None  # closed: never handed out again
    assert outcomes["wire"] == outcomes["cursor"] == pymysql.constants.CR.CR_SERVER_LOST


def _cut_when_running(server: MariaDB, session: int, link: Relay) -> None:
    if _wait_running(server, session):
        link.cut()
