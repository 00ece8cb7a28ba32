"""MySQL and MariaDB on the event loop, through aiomysql (PyMySQL's protocol code on asyncio), by its public API.

Every wait here is an await: a silent server costs the probe a socket and a coroutine, never a thread. A probe
given up is cancelled where it waits, and aiomysql closes the connection it was reading from.
"""

import asyncio
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT, ER, FIELD_TYPE

from app.config import Target
from app.config.statements import (
    SEVERAL_STATEMENTS,
    as_the_server_reads,
    backslash_codec,
    refuse_unless_read,
    several_statements,
    without_trailing_semicolons,
)
from app.drivers.dialect import CANCEL_TIMEOUT, DEADLINE_GRACE, Dialect, Fetched
from app.drivers.kills import Identity, KillSkipped, read_identity
from app.drivers.tls import preferred_tls_context, tls_context

# Each statement of queries.yml runs in a read-only transaction of its own: a statement that commits implicitly
# (CHECK TABLE, ANALYZE TABLE...) cannot leave the next one outside (aiomysql keeps no transaction status from a
# result set's end, so sqlprobe could not tell). The first is begun on its own; each statement's text then carries
# the next one's begin (which ends its own transaction), or, for the last, the COMMIT: one write per statement.
BEGIN = "START TRANSACTION READ ONLY"
END = "COMMIT"


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
    # Every statement of the session runs read-only; inside the READ ONLY transaction even
    # SET STATEMENT tx_read_only=0 FOR DELETE ... fails.
    read_only = {"init_command": "SET SESSION TRANSACTION READ ONLY"} if target.read_only else {}
    # No connect_timeout: aiomysql would wrap the TCP connect in asyncio.wait_for, which on Python 3.11 can lose a
    # connection made just as it is cancelled (its socket then stays open for good). The probe's deadline cancels
    # the connect, TLS and authentication as one; a KILL's connection has its own timeout around it.
    required = {"require_tls": True} if target.tls is not None else {}
    return {"connect_timeout": None, "ssl": tls, "conv": _CONVERSIONS} | read_only | required


async def connect(*, require_tls: bool = False, **arguments: Any) -> Any:
    """aiomysql's connection; closed if connecting is cancelled or fails half-way. With ``require_tls``, refused
    (2026) unless the session is encrypted: aiomysql goes on in clear text when the server does not offer TLS.
    Without TLS, the password is never sent in a form the server could read back (see _Credential).

    It is made unconnected and connected by aiomysql's public way for that, ping(reconnect=True), so that the
    credentials can be given the connection, whose greeting tells whether TLS is on, before they are encoded.
    """
    if require_tls and arguments.get("read_default_file"):
        # aiomysql reads the user and password from the option file after it is given them: not to be withheld.
        raise pymysql.err.OperationalError(2026, TLS_OPTION_FILE)
    # The user name too when TLS is required: it is encoded first, before anything is sent after the greeting, so a
    # session that would go in clear gets no login at all, even for a user without a password.
    credentials = {
        key: _Credential(arguments[key])
        for key in ("user", "password")
        if arguments.get(key) and (require_tls or key == "password")
    }
    arguments |= credentials
    connection = aiomysql.Connection(**arguments)
    for credential in credentials.values():
        credential.connection = connection
        credential.require_tls = require_tls
    try:
        await connection.ping(reconnect=True)
        if require_tls and not connection.server_capabilities & CLIENT.SSL:
            raise pymysql.err.OperationalError(2026, TLS_REFUSED)
    except BaseException:
        connection.close()
        raise
    return connection


TLS_REFUSED = "TLS is required (the target's tls: key), but the server does not offer it"
TLS_OPTION_FILE = (
    "TLS is required (the target's tls: key), but credentials read from the DSN's read_default_file could go out"
    " before TLS is known to be on: give them in the DSN or password_file"
)
CLEAR_TEXT_REFUSED = (
    "the server asked for the password in a form it can read (the mysql_clear_password plugin, or encrypted with a"
    " key the server sends itself) on a connection without verified TLS: refused (give the server TLS and the target"
    " tls:, which verifies its certificate; a server without tls: may be anyone offering any certificate)"
)


class _Credential(str):
    """A password (or, when TLS is required, a user name) that aiomysql encodes for authentication.

    aiomysql sends the password right after the greeting: hashed, or as it is if the server asks for
    mysql_clear_password (in its greeting or by an authentication switch), and it encrypts the session first only if
    the greeting offers TLS. aiomysql has no setting against either, so the credential decides when it is encoded,
    from the server's capabilities (public: Connection.server_capabilities; given a context, aiomysql always starts
    TLS when they offer it, before authenticating):
    - with TLS required (tls:) and no TLS offered, it refuses to be encoded: a man in the middle who strips the
      offer gets no login at all;
    - a password without verified TLS (no tls:, where the TLS a server offers is taken unverified, so any server
      can offer it) is encoded into bytes that can only be hashed (_HashOnly): the clear-text plugin (and RSA with a
      key the server sends, and caching_sha2_password's full login over TLS) append a NUL to the password before
      sending it, and that append is refused. Only a target with tls: sends its password where the server can read
      it, and only to a server whose certificate was verified.
    Both rest on how aiomysql (pinned <0.4 in pyproject.toml) forms what it sends; tests/drivers/test_tls.py and
    tests/drivers/test_clear_text_auth.py fail if that changes.
    """

    connection: Any = None
    require_tls = False

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        data = str(self).encode(encoding, errors)
        if self.require_tls and self.connection is not None and self.connection.server_capabilities & CLIENT.SSL:
            return data  # verified TLS (the target's tls:), which aiomysql starts before authenticating
        if self.require_tls or self.connection is None:
            raise pymysql.err.OperationalError(2026, TLS_REFUSED)
        # Called only for the password without require_tls: the user name is not wrapped then.
        return _HashOnly(data)


class _HashOnly(bytes):
    """A password's bytes on a session without verified TLS: they may be hashed (mysql_native_password, the fast path of
    caching_sha2_password), never joined to anything to be sent as they are."""

    def __add__(self, other: object) -> bytes:
        raise pymysql.err.OperationalError(2059, CLEAR_TEXT_REFUSED)


async def set_up(connection: Any, target: Target) -> Identity | None:
    """Set up a new session, and note which server it reached and its id there (app/drivers/kills.py)."""
    if target.read_only and "MariaDB" in connection.get_server_info():
        # A session cut off inside its read-only transaction (a partition) ends, and lets go of its metadata locks,
        # soon after the deadline rather than at wait_timeout. MariaDB only (10.3 on): MySQL has no such setting.
        await command(
            connection, f"SET SESSION idle_readonly_transaction_timeout = {math.ceil(target.timeout + DEADLINE_GRACE)}"
        )
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
    # Checked as the server gets it, the values bound: under some charsets a value can end its string (in sjis and
    # ujis, Python writes the yen sign as a backslash's byte, which escapes the quote escaping put after it).
    text = one_statement(cursor.mogrify(sql, arguments))
    if reads_only:
        # As the server reads it: in a charset that sends a character as a backslash's byte, that is a backslash.
        codec = backslash_codec(connection.encoding)
        refuse_unless_read(text if codec is None else as_the_server_reads(text, codec), "mysql")
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
    fetch=fetch,
    command=command,
    ping=ping,
    close=lambda connection: connection.close(),  # aiomysql's close(): the transport, at once
    begin=BEGIN,
    restart=BEGIN,
    end=END,
    stop=lambda connection, url_args, identity: kill_query(url_args, identity),
    chain=True,
)
