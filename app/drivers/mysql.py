"""MySQL and MariaDB on the event loop, through aiomysql (PyMySQL's protocol code on asyncio), by its public API.

Every wait here is an await: a silent server costs the probe a socket and a coroutine, never a thread. A probe
given up is cancelled where it waits, and aiomysql closes the connection it was reading from.
"""

import asyncio
import functools
import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import COMMAND, ER, FIELD_TYPE

from app.config import Target
from app.config.session_settings import SettingValue
from app.config.statements import (
    SEVERAL_STATEMENTS,
    as_the_server_reads,
    backslash_codec,
    refuse_unless_read,
    several_statements,
    without_trailing_semicolons,
)
from app.drivers import mysql_pipeline
from app.drivers.dialect import CANCEL_TIMEOUT, DEADLINE_GRACE, Dialect, Fetched
from app.drivers.kills import Identity, KillSkipped, read_identity
from app.drivers.mysql_login import connect
from app.drivers.mysql_pipeline import COM_RESET_CONNECTION
from app.drivers.tls import preferred_tls_context, tls_context

# Each statement of queries.yml runs in a read-only transaction of its own: a statement that commits implicitly
# (CHECK TABLE, ANALYZE TABLE...) cannot leave the next one outside (aiomysql keeps no transaction status from a
# result set's end, so sqlprobe could not tell). The first is begun on its own; each statement's text then carries
# the next one's begin (which ends its own transaction), or, for the last, the COMMIT: one write per statement.
BEGIN = "START TRANSACTION READ ONLY"
END = "COMMIT"
# And the named locks (GET_LOCK) a statement took let go at once, in the same text: they are not the transaction's.
END_RELEASING_LOCKS = "COMMIT;DO RELEASE_ALL_LOCKS()"


@functools.cache
def _releases_all_locks(server_info: str) -> bool:
    """Whether a server of this version has RELEASE_ALL_LOCKS() (MariaDB 10.5 on, MySQL 5.7 on)."""
    # MariaDB before 11 says it is 5.5.5 first, for old clients' sake: "5.5.5-10.11.6-MariaDB".
    match = re.match(r"(?:5\.5\.5-)?(\d+)\.(\d+)", server_info)
    if match is None:
        return False
    version = (int(match.group(1)), int(match.group(2)))
    return version >= ((10, 5) if "MariaDB" in server_info else (5, 7))


def end(connection: Any) -> str:
    """The text that ends a probe's read-only transaction on ``connection``'s server."""
    return END_RELEASING_LOCKS if _releases_all_locks(connection.get_server_info()) else END


class SeveralStatements(pymysql.err.ProgrammingError):  # type: ignore[misc]
    """A text of queries.yml holds more than one statement."""


def one_statement(sql: str) -> str:
    """``sql`` without a trailing ';'; SeveralStatements if a ';' stands anywhere else in it (app/config/statements.py).

    The session runs several statements in one text: aiomysql always asks the server for that, and sqlprobe sends
    its own statements after the probe's in the same text.
    """
    if several_statements(sql):
        raise SeveralStatements(1064, SEVERAL_STATEMENTS)
    return without_trailing_semicolons(sql)


def _bit_value(data: bytes) -> int:
    """A BIT(n) cell (big-endian bytes, as the server sends it) as the number it is."""
    return int.from_bytes(data, "big")


# PyMySQL's converters (aiomysql's own), but BIT(n) cells are numbers, not bytes.
_CONVERSIONS = {**pymysql.converters.conversions, FIELD_TYPE.BIT: _bit_value}


def connect_args(target: Target) -> dict[str, Any]:
    """aiomysql's connect() arguments besides the URL's: a timeout, TLS, read-only sessions, BIT as numbers."""
    # Without tls: TLS when the server offers it, unverified, as PyMySQL does (one context for the process).
    tls = preferred_tls_context() if target.tls is None else tls_context(target.tls)
    # No connect_timeout: aiomysql would wrap the TCP connect in asyncio.wait_for, which on Python 3.11 can lose a
    # connection made just as it is cancelled (its socket then stays open for good). The probe's deadline cancels
    # the connect, TLS and authentication as one; a KILL's connection has its own timeout around it.
    required = {"require_tls": True} if target.tls is not None else {}
    arguments = {"connect_timeout": None, "ssl": tls, "conv": _CONVERSIONS, "init_command": session_settings(target)}
    return arguments | required


def session_settings(target: Target) -> str:
    """sqlprobe's settings of a session: applied when it is made, and again after each reset (reset_and_begin)."""
    # Every statement of the session runs read-only; inside the READ ONLY transaction even
    # SET STATEMENT tx_read_only=0 FOR DELETE ... fails.
    read_only = "SET SESSION TRANSACTION READ ONLY;" if target.read_only else ""
    # A statement behind a locked table (LOCK TABLES, an ALTER TABLE's metadata lock, a row lock) fails after the
    # bound rather than holding the probe: whole seconds, at least 1, on both servers.
    wait = max(1, math.ceil(target.lock_wait_timeout))
    # A session cut off inside its read-only transaction (a partition) ends, and lets go of its metadata locks,
    # soon after the deadline rather than at wait_timeout. MariaDB only (10.3 on, hence the executable comment):
    # MySQL has no such setting.
    idle = math.ceil(target.timeout + DEADLINE_GRACE)
    idle_setting = f" /*M!100300 , idle_readonly_transaction_timeout = {idle} */" if target.read_only else ""
    # The target's own (session_settings:), in the same statement: no round trip of their own.
    own = "".join(f", {name} = {_sql_value(value)}" for name, value in target.session_settings)
    return (
        f"{read_only}SET SESSION autocommit = 1, lock_wait_timeout = {wait}, innodb_lock_wait_timeout = {wait}"
        f"{own}{idle_setting}"
    )


_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def _sql_value(value: SettingValue) -> str:
    """A session setting's value in SQL: ON/OFF, a number, or a quoted text (checked at load: no quote in it)."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, int | float) or _NUMBER.match(value):
        return str(value)
    return f"'{value}'"


# COM_RESET_CONNECTION (MySQL 5.7.3, MariaDB 10.2.4 on) gives a pooled session back as new: named locks, user
# variables, temporary tables, prepared statements and session variables of the probe before are gone. Neither
# aiomysql nor PyMySQL has a public call for it, so it is sent with aiomysql's own protocol steps (the ones its
# ping() and kill() use), pipelined with sqlprobe's first statements so that it costs no round trip. aiomysql is
# pinned in pyproject.toml; without these steps (a later aiomysql), a probe takes a new connection instead.
_PROTOCOL_STEPS = ("_execute_command", "_read_ok_packet", "next_result")
RESET_AVAILABLE = all(callable(getattr(aiomysql.Connection, step, None)) for step in _PROTOCOL_STEPS)


async def reset_and_begin(connection: Any, then: str) -> None:
    """Reset the session (COM_RESET_CONNECTION), then run ``then`` (sqlprobe's settings and begin), both written
    before either answer is read: one round trip. On any failure the connection is closed (its answers are out of
    step), and the error raised: the caller takes a new connection."""
    try:
        if not RESET_AVAILABLE:
            raise pymysql.err.InterfaceError(0, "this aiomysql cannot reset a session: a new one is used")
        await connection._execute_command(COM_RESET_CONNECTION, b"")
        await connection._execute_command(COMMAND.COM_QUERY, then)
        await connection._read_ok_packet()  # the reset's answer
        connection._next_seq_id = 1  # the query's answer is numbered from 1, as the reset's was (a new command)
        await connection.next_result()
        while connection._result is not None and connection._result.has_next:
            await connection.next_result()
    except BaseException:
        connection.close()
        raise


async def set_up(connection: Any, target: Target) -> Identity | None:
    """Note which server a new session reached and its id there (app/drivers/kills.py); its settings are the
    init_command's (session_settings)."""
    try:
        return await read_identity(fetch, connection)
    except pymysql.err.MySQLError:
        if connection.closed:
            raise  # the connection itself failed: as any failure to connect
        return None  # a proxy that refuses the query, say: this connection's statements are never killed


async def fetch(
    connection: Any,
    sql: str,
    max_rows: int = sys.maxsize,
    arguments: Sequence[Any] | Mapping[str, Any] | None = None,
    after: str = "",
    reads_only: bool = False,
    timeout: float | None = None,
) -> Fetched:
    """Run ``sql`` (one statement: see one_statement; with ``reads_only``, one that only reads), then ``after``
    (sqlprobe's own, without a result set) in the same text; the column names and at most ``max_rows`` rows of
    ``sql``'s first result, or None if it has none.

    Without ``arguments`` the SQL is sent as written; with them, aiomysql binds them (%s, %(name)s) on the client,
    and a ';' in a value counts as one in the SQL.
    Rows are read as they come (an unbuffered cursor): when ``max_rows`` were read, the connection is closed so the
    server stops sending the rest, and the caller discards it (``after`` is lost with it). Later results (a
    procedure's, then ``after``'s) are read and dropped; an error in them is raised. If ``sql`` fails, the server
    runs nothing after it.
    """
    cursor = await connection.cursor(aiomysql.SSCursor)
    text = prepare(connection, sql, arguments, reads_only, timeout)
    if after:
        # A comment that runs to the end of the line (#, -- ) must not swallow it: after one, on a line of its own
        # (only then: a session's statement, as SHOW PROCESSLIST tells it, is the query as written).
        separator = "\n;" if "#" in text or "--" in text else ";"
        text = f"{text}{separator}{after}"
    await cursor.execute(text)
    if cursor.description is None:
        await cursor.close()
        return None
    columns = tuple(column[0] for column in cursor.description)
    rows = await cursor.fetchmany(max_rows)
    if len(rows) >= max_rows:
        connection.close()  # the rest unread: the connection is out of step
        return columns, rows
    await cursor.close()
    return columns, rows


def prepare(
    connection: Any,
    sql: str,
    arguments: Sequence[Any] | Mapping[str, Any] | None,
    reads_only: bool,
    timeout: float | None,
) -> str:
    """``sql`` as the server gets it: ``arguments`` bound (by aiomysql's escaping), one statement, checked to only
    read (with ``reads_only``: WriteRefused otherwise), time-limited by the server (``timeout``)."""
    if arguments is not None:
        escape = connection.escape
        if isinstance(arguments, Mapping):
            sql = sql % {key: escape(value) for key, value in arguments.items()}
        else:
            sql = sql % tuple(escape(value) for value in arguments)
    # Checked as the server gets it, the values bound: under some charsets a value can end its string (in sjis and
    # ujis, Python writes the yen sign as a backslash's byte, which escapes the quote escaping put after it).
    text = one_statement(sql)
    if reads_only:
        # As the server reads it: in a charset that sends a character as a backslash's byte, that is a backslash.
        codec = backslash_codec(connection.encoding)
        refuse_unless_read(text if codec is None else as_the_server_reads(text, codec), "mysql")
    if timeout is not None:
        text = time_limited(text, timeout, "MariaDB" in connection.get_server_info())
    return text


_SELECT = re.compile(r"\s*select\b", re.IGNORECASE)


def time_limited(text: str, seconds: float, mariadb: bool) -> str:
    """``text`` (checked already: sqlprobe's wrapper is not the user's text) with the server's own time limit.

    MariaDB: SET STATEMENT max_statement_time, for any statement. MySQL: the MAX_EXECUTION_TIME hint, which it
    honours on a SELECT only (in whole milliseconds); other statements have the run's KILL QUERY as their limit.
    """
    if mariadb:
        return f"SET STATEMENT max_statement_time={seconds:.3f} FOR {text}"
    match = _SELECT.match(text)
    if match is None:
        return text
    return f"{match.group(0)} /*+ MAX_EXECUTION_TIME({max(1, math.ceil(seconds * 1000))}) */{text[match.end() :]}"


async def command(connection: Any, sql: str) -> None:
    """Run one of sqlprobe's own statements (no result set)."""
    await fetch(connection, sql)


async def ping(connection: Any) -> None:
    """The cheapest round trip that proves the server answers."""
    await connection.ping(reconnect=False)


async def kill_query(url_args: Mapping[str, Any], identity: Identity | None) -> None:
    """KILL QUERY over a new connection, if it reaches the server the statement runs on; else KillSkipped."""
    if identity is None:
        raise KillSkipped("identity_unknown")
    # A separate, unpooled connection: the target's pool may be exhausted by the very query we stop.
    connection = None
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT):
            connection = await connect(**url_args)
            here = await read_identity(fetch, connection)
            if here is None or here.server != identity.server:
                # Behind a proxy or load balancer, this connection reached another server: the id is someone else's.
                raise KillSkipped("other_server")
            try:
                await command(connection, f"KILL QUERY {int(identity.connection_id)}")
            except pymysql.err.OperationalError as error:
                if error.args[0] != ER.NO_SUCH_THREAD:
                    raise
                # The session is gone (the statement ended, and its connection was discarded): nothing to stop.
            await connection.ensure_closed()  # with COM_QUIT: not an aborted connection in the server's counters
    finally:
        if connection is not None:
            connection.close()


MYSQL = Dialect(
    driver="aiomysql",
    connect_args=connect_args,
    connect=connect,
    set_up=set_up,
    settings=session_settings,
    reset=reset_and_begin,
    fetch=fetch,
    command=command,
    ping=ping,
    close=lambda connection: connection.close(),  # aiomysql's close(): the transport, at once
    begin=BEGIN,
    restart=BEGIN,
    end=END,
    end_for=end,
    stop=lambda connection, url_args, identity: kill_query(url_args, identity),
    chain=True,
    prepare=prepare,
    pipe=mysql_pipeline.send if mysql_pipeline.PIPELINE_AVAILABLE and RESET_AVAILABLE else None,
)
