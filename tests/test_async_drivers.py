"""aiomysql and asyncmy read what PyMySQL's cursor reads, and fail as it fails, on a real MariaDB server.

The cases of tests/test_mysql_wire.py, for the asyncio drivers issue 14 chooses between: every expected value is
what PyMySQL's cursor returns for the same SQL on the same server. The drivers are read through their unbuffered
cursors (fetchmany), as sqlprobe must stop reading at max_rows. Where a driver differs, the test says how.
"""

import asyncio
import contextlib
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any

import pymysql
import pytest

from app.engines import fetch_with_cursor
from tests.relay import Relay
from tests.servers import EXPORTER_USER, MariaDB
from tests.test_mysql_wire import COLUMNS, ROWS, TYPES_TABLE

aiomysql = pytest.importorskip("aiomysql")
asyncmy = pytest.importorskip("asyncmy")
from asyncmy import cursors as asyncmy_cursors  # noqa: E402 - after the skip

DRIVERS = ("aiomysql", "asyncmy")
CR_SERVER_LOST = pymysql.constants.CR.CR_SERVER_LOST
CR_SERVER_GONE_ERROR = pymysql.constants.CR.CR_SERVER_GONE_ERROR
Fetched = tuple[tuple[str, ...], list[tuple[Any, ...]]] | None


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
        "create procedure probe.two_results()"
        " begin select 1 as first; select seq, repeat('x', 1000) as pad from seq_1_to_1000; end",
        "grant execute on procedure probe.two_results to 'exporter'@'127.0.0.1'",
    )
    return server


@pytest.fixture
def reference(server: MariaDB) -> Iterator[Any]:
    """A PyMySQL connection as the exporter user: the reference."""
    connection = server.exporter_connection()
    yield connection
    connection.close()


async def connect(driver: str, port: int, password: str, **options: Any) -> Any:
    """A connection of ``driver`` as the exporter user, in autocommit as sqlprobe's."""
    common = {"host": "127.0.0.1", "port": port, "user": EXPORTER_USER, "password": password, "autocommit": True}
    if driver == "aiomysql":
        return await aiomysql.connect(db="probe", **common, **options)
    return await asyncmy.connect(database="probe", **common, **options)


async def fetch(driver: str, connection: Any, sql: str, max_rows: int = sys.maxsize) -> Fetched:
    """``sql`` through the driver's unbuffered cursor: column names and at most ``max_rows`` rows."""
    cursor = connection.cursor(aiomysql.SSCursor if driver == "aiomysql" else asyncmy_cursors.SSCursor)
    if driver == "aiomysql":
        cursor = await cursor  # aiomysql's cursor() is a coroutine
    try:
        await cursor.execute(sql)
        if cursor.description is None:
            return None
        rows = await cursor.fetchmany(max_rows)
        return tuple(column[0] for column in cursor.description), [tuple(row) for row in rows]
    finally:
        if not is_closed(driver, connection):
            await cursor.close()  # reads and drops the rest, and the later results


def is_closed(driver: str, connection: Any) -> bool:
    """What the driver says publicly about its connection: closed (by itself) or not."""
    return bool(connection.closed) if driver == "aiomysql" else not connection.connected


def expected(reference: Any, sql: str) -> Fetched:
    fetched = fetch_with_cursor(reference, sql)
    return None if fetched is None else (fetched[0], [tuple(row) for row in fetched[1]])


def run(driver: str, server: MariaDB, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
    """``body(connection)`` on a new connection of ``driver``, closed after, on a new event loop."""

    async def main() -> Any:
        connection = await connect(driver, server.port, server.password, **options)
        try:
            return await body(connection)
        finally:
            connection.close()

    return asyncio.run(main())


TYPE_QUERIES = [
    f"select * from {TYPES_TABLE}",
    "select 1 as `one`, 'a' as `Mixed Case ✓`, null as nothing, 2.5 as dec_literal, 1e3 as dbl_literal",
    "select json_object('k', 1) as doc, cast(x'ff' as binary) as raw, now(6) - now(6) as zero",
    "select _latin1 x'e9' as latin, convert('✓' using utf16) as utf16, _binary 'é' as bin, cast('é' as binary) as b2",
    "show global variables like 'max_connections'",
    f"select * from {TYPES_TABLE} where 1 = 0",
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("sql", TYPE_QUERIES)
def test_columns_and_values_equal_what_pymysqls_cursor_reads(
    driver: str, server: MariaDB, reference: Any, sql: str
) -> None:
    assert run(driver, server, lambda connection: fetch(driver, connection, sql)) == expected(reference, sql)


@pytest.mark.parametrize("driver", DRIVERS)
def test_bit_is_a_number_with_a_converter_passed_as_conv(driver: str, server: MariaDB) -> None:
    """sqlprobe reads BIT(n) as the number it is: both drivers take PyMySQL-style decoders by field type."""
    if driver == "aiomysql":
        conv = {**pymysql.converters.conversions, pymysql.constants.FIELD_TYPE.BIT: _bit_value}
    else:
        conv = {**asyncmy.converters.conversions, asyncmy.constants.FIELD_TYPE.BIT: _bit_value}
    sql = f"select bits, bits + 0 as number from {TYPES_TABLE}"
    fetched = run(driver, server, lambda connection: fetch(driver, connection, sql), conv=conv)
    assert fetched is not None
    assert [row[0] for row in fetched[1]] == [row[1] for row in fetched[1]]


def _bit_value(data: bytes) -> int:
    return int.from_bytes(data, "big")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_result_larger_than_many_reads_equals_the_cursors(driver: str, server: MariaDB, reference: Any) -> None:
    sql = "select seq, repeat('x', seq % 700) as pad, seq / 7 as ratio from seq_1_to_20000"
    assert run(driver, server, lambda connection: fetch(driver, connection, sql)) == expected(reference, sql)


@pytest.mark.parametrize("driver", DRIVERS)
def test_cells_longer_than_a_packet_equal_the_cursors(driver: str, server: MariaDB) -> None:
    (previous,) = server.root_query("select @@global.max_allowed_packet")[0]
    server.execute(f"set global max_allowed_packet = {64 * 2**20}")
    reference = server.exporter_connection()
    try:
        for size in (5 * 2**20, 2**24 - 10, 20 * 2**20):
            sql = f"select {size} as size, repeat('é', {size // 2}) as text_, repeat(x'7f', {size}) as raw"
            want = expected(reference, sql)
            assert want is not None
            assert want[1][0][2] is not None
            assert run(driver, server, partial(fetch, driver, sql=sql)) == want
    finally:
        reference.close()
        server.execute(f"set global max_allowed_packet = {previous}")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_procedures_first_result_is_read_and_the_rest_drained(driver: str, server: MariaDB, reference: Any) -> None:
    async def body(connection: Any) -> tuple[Fetched, Fetched]:
        first = await fetch(driver, connection, "call probe.two_results()", max_rows=5)
        return first, await fetch(driver, connection, "select 'next' as after")

    first, after = run(driver, server, body)
    assert first == expected(reference, "call probe.two_results()")
    assert after == (("after",), [("next",)])


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_server_error_is_pymysqls_and_the_connection_goes_on(driver: str, server: MariaDB, reference: Any) -> None:
    with pytest.raises(pymysql.err.ProgrammingError) as want:
        fetch_with_cursor(reference, "select * from probe.no_such_table")

    async def body(connection: Any) -> tuple[tuple[str, tuple[Any, ...]], Fetched]:
        try:
            await fetch(driver, connection, "select * from probe.no_such_table")
        except Exception as error:  # noqa: BLE001 - compared below
            raised = (type(error).__name__, error.args)
        return raised, await fetch(driver, connection, "select 7 as seven")

    raised, after = run(driver, server, body)
    assert raised == (type(want.value).__name__, want.value.args)
    assert after == (("seven",), [(7,)])


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_inside_a_result_set_is_raised_not_a_short_result(
    driver: str, server: MariaDB, reference: Any
) -> None:
    sql = "select seq, (select inner_.seq from seq_1_to_2 inner_ where outer_.seq > 2) as v from seq_1_to_5 outer_"
    with pytest.raises(pymysql.err.MySQLError) as want:
        fetch_with_cursor(reference, sql)

    async def body(connection: Any) -> tuple[str, tuple[Any, ...]]:
        try:
            await fetch(driver, connection, sql)
        except Exception as error:  # noqa: BLE001 - compared below
            return type(error).__name__, error.args
        return "no error", ()

    assert run(driver, server, body) == (type(want.value).__name__, want.value.args)


STALE_STATUS = "the driver keeps the server status of OK packets only, not of a result set's EOF"


@pytest.mark.parametrize(
    ("driver", "buffered"),
    [
        pytest.param("aiomysql", False, marks=pytest.mark.xfail(reason=STALE_STATUS, strict=True)),
        pytest.param("aiomysql", True, marks=pytest.mark.xfail(reason=STALE_STATUS, strict=True)),
        pytest.param(
            "asyncmy",
            False,
            marks=pytest.mark.xfail(reason="the unbuffered cursor keeps the status from before the rows", strict=True),
        ),
        ("asyncmy", True),
    ],
)
def test_the_public_transaction_status_follows_check_tables_implicit_commit(
    driver: str, buffered: bool, server: MariaDB
) -> None:
    """get_transaction_status() after CHECK TABLE (a result set, and an implicit commit) says what the server says."""
    cursor_class = {
        ("aiomysql", False): aiomysql.SSCursor,
        ("aiomysql", True): aiomysql.Cursor,
        ("asyncmy", False): asyncmy_cursors.SSCursor,
        ("asyncmy", True): asyncmy_cursors.Cursor,
    }[driver, buffered]

    async def body(connection: Any) -> tuple[list[bool], Any]:
        seen = []
        for sql in ("start transaction read only", "select seq from seq_1_to_3", "check table probe.items"):
            cursor = connection.cursor(cursor_class)
            if driver == "aiomysql":
                cursor = await cursor
            await cursor.execute(sql)
            rows = cursor.fetchall()
            if not isinstance(rows, list | tuple):
                await rows
            await cursor.close()
            seen.append(connection.get_transaction_status())
        open_now = await fetch(driver, connection, "select @@in_transaction")
        assert open_now is not None
        return seen, open_now[1][0][0]

    seen, open_now = run(driver, server, body)
    assert seen[:2] == [True, True]
    assert seen[2] == bool(open_now)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_result_over_max_rows_is_cut_by_closing_the_connection(driver: str, server: MariaDB) -> None:
    async def body(connection: Any) -> tuple[Fetched, bool]:
        cursor = connection.cursor(aiomysql.SSCursor if driver == "aiomysql" else asyncmy_cursors.SSCursor)
        if driver == "aiomysql":
            cursor = await cursor
        await cursor.execute("select seq from seq_1_to_100000")
        rows = await cursor.fetchmany(11)
        connection.close()  # no round trip: the server stops at its next write
        return (("seq",), [tuple(row) for row in rows]), is_closed(driver, connection)

    fetched, closed = run(driver, server, body)
    assert fetched == (("seq",), [(i,) for i in range(1, 12)])
    assert closed


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("how", ["query", "connection"])
def test_a_killed_query_and_a_killed_session_fail_as_with_pymysqls_cursor(
    driver: str, how: str, server: MariaDB
) -> None:
    reference = server.exporter_connection()
    killer = threading.Thread(target=_kill_soon, args=(server, how, reference.thread_id()))
    killer.start()
    try:
        fetch_with_cursor(reference, "select sleep(30)")
        want: tuple[str, Any] = ("no error", None)
    except pymysql.err.MySQLError as error:
        want = (type(error).__name__, error.args[0])
    finally:
        killer.join()
        reference.close()

    async def body(connection: Any) -> tuple[str, Any]:
        killer = threading.Thread(target=_kill_soon, args=(server, how, connection.thread_id()))
        killer.start()
        try:
            await fetch(driver, connection, "select sleep(30)")
            return "no error", None
        except Exception as error:  # noqa: BLE001 - compared below
            return type(error).__name__, error.args[0]
        finally:
            await asyncio.to_thread(killer.join)

    assert run(driver, server, body) == want


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_connection_cut_mid_query_is_lost_as_with_pymysqls_cursor(driver: str, server: MariaDB) -> None:
    with Relay([server.port]) as link:

        async def main() -> tuple[Any, bool]:
            connection = await connect(driver, link.port, server.password)
            cutter = threading.Thread(target=_cut_when_running, args=(server, connection.thread_id(), link))
            cutter.start()
            try:
                await fetch(driver, connection, "select sleep(30)")
                return "no error", is_closed(driver, connection)
            except Exception as error:  # noqa: BLE001 - compared below
                return error.args[0], is_closed(driver, connection)
            finally:
                await asyncio.to_thread(cutter.join)
                _end_session(server, connection.thread_id())
                connection.close()

        code, closed = asyncio.run(main())
    assert code == CR_SERVER_LOST
    # aiomysql closes its connection; asyncmy's still says it is connected (only the error tells it is lost).
    assert closed == (driver == "aiomysql")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_task_cancelled_mid_read_leaves_the_connection_closed(driver: str, server: MariaDB) -> None:
    async def body(connection: Any) -> tuple[bool, str]:
        task = asyncio.create_task(fetch(driver, connection, "select sleep(30)"))
        await asyncio.to_thread(_wait_running, server, connection.thread_id())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _end_session(server, connection.thread_id())
        try:
            await fetch(driver, connection, "select 1")
            after = "no error"
        except Exception as error:  # noqa: BLE001 - compared below
            after = type(error).__name__
        return is_closed(driver, connection), after

    assert run(driver, server, body) == (True, "InterfaceError")


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_idle_connection_the_server_closed_is_not_known_publicly_until_used(driver: str, server: MariaDB) -> None:
    """Neither driver says publicly that the server closed an idle connection: the next statement finds out."""

    async def body(connection: Any) -> tuple[bool, Any]:
        session = connection.thread_id()
        server.execute(f"kill connection {session}")
        while any(row[0] == session for row in server.exporter_sessions()):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the end of stream has reached the event loop
        closed = is_closed(driver, connection)
        try:
            await fetch(driver, connection, "select 1")
            return closed, "no error"
        except Exception as error:  # noqa: BLE001 - compared below
            return closed, error.args[0]

    # Both codes are disconnects to SQLAlchemy: aiomysql reads the end of stream (2013), asyncmy refuses to write on
    # a transport already closing (2006).
    assert run(driver, server, body) == (False, CR_SERVER_LOST if driver == "aiomysql" else CR_SERVER_GONE_ERROR)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_statement_with_warnings_costs_a_show_warnings_round_trip(driver: str, server: MariaDB) -> None:
    """Both drivers' cursors send SHOW WARNINGS after a statement with warnings (aiomysql: warnings.warn; asyncmy:
    its logger), unless a subclass replaces the private ``_show_warnings``, as SQLAlchemy's aiomysql dialect does."""
    before = _show_warnings_count(server)
    buffered = aiomysql.Cursor if driver == "aiomysql" else asyncmy_cursors.Cursor

    async def body(connection: Any) -> None:
        cursor = connection.cursor(buffered)
        if driver == "aiomysql":
            cursor = await cursor
        # The server's warning text quotes the value ('1x'): aiomysql hands it to warnings.warn, asyncmy to its logger.
        with pytest.warns(Warning, match="Truncated incorrect") if driver == "aiomysql" else contextlib.nullcontext():
            await cursor.execute("select cast('1x' as unsigned) as v")
        await cursor.close()

    run(driver, server, body)
    assert _show_warnings_count(server) - before == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_unbuffered_cursor_sends_no_show_warnings(driver: str, server: MariaDB) -> None:
    """The unbuffered cursors learn the warning count at the result's end, and then ask nothing: no round trip."""
    before = _show_warnings_count(server)
    fetched = run(driver, server, lambda connection: fetch(driver, connection, "select cast('1x' as unsigned) as v"))
    assert fetched == (("v",), [(1,)])
    assert _show_warnings_count(server) - before == 0


def _show_warnings_count(server: MariaDB) -> int:
    ((_, value),) = server.root_query("show global status like 'Com_show_warnings'")
    return int(value)


def _end_session(server: MariaDB, session: int) -> None:
    with contextlib.suppress(pymysql.err.MySQLError):
        server.execute(f"kill connection {session}")


def _kill_soon(server: MariaDB, how: str, session: int) -> None:
    if _wait_running(server, session):
        server.execute(f"kill {how} {session}")


def _wait_running(server: MariaDB, session: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = server.root_query(
            f"select count(*) from information_schema.processlist where id = {session} and info like 'select sleep%'"
        )
        if running[0][0]:
            return True
        time.sleep(0.05)
    return False


def _cut_when_running(server: MariaDB, session: int, link: Relay) -> None:
    if _wait_running(server, session):
        link.cut()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tls_context_against_a_server_without_tls(driver: str, server: MariaDB) -> None:
    """sqlprobe's tls: settings require TLS. aiomysql goes on in plain text when the server offers no TLS (as
    PyMySQL's "preferred" mode); asyncmy refuses."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    async def body(connection: Any) -> Fetched:
        return await fetch(
            driver,
            connection,
            "select variable_value from information_schema.session_status where variable_name = 'Ssl_cipher'",
        )

    if driver == "aiomysql":
        assert run(driver, server, body, ssl=context) == (("variable_value",), [("",)])  # no cipher: plain text
    else:
        with pytest.raises(Exception) as raised:  # noqa: PT011 - what it raises is what we look at
            run(driver, server, body, ssl=context)
        assert isinstance(raised.value, (OSError, asyncmy.errors.OperationalError)), repr(raised.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_sqlalchemys_async_engine_hands_out_the_drivers_connection(driver: str, server: MariaDB) -> None:
    """create_async_engine(mysql+<driver>): the pooled connection's driver_connection is the driver's own."""
    pytest.importorskip("greenlet")  # SQLAlchemy[asyncio]
    from sqlalchemy.ext.asyncio import create_async_engine

    url = server.dsn.replace("mysql+pymysql", f"mysql+{driver}")

    async def main() -> tuple[str, Fetched]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver_connection = raw.driver_connection
                return type(driver_connection).__module__, await fetch(driver, driver_connection, "select 1 as one")
        finally:
            await engine.dispose()

    module, fetched = asyncio.run(main())
    assert module.split(".")[0] == driver
    assert fetched == (("one",), [(1,)])
