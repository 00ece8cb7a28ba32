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
from app.dialect import CANCEL_TIMEOUT, DEADLINE_GRACE, Dialect, Fetched
from app.kills import Identity, KillSkipped, read_identity
from app.tls import preferred_tls_context, tls_context

# Each statement of queries.yml runs in a read-only transaction of its own, begun just before it (which ends the one
# before): a statement that commits implicitly (CHECK TABLE, ANALYZE TABLE...) cannot leave the next one outside.
# aiomysql keeps no transaction status from a result set's end, so the begin is how sqlprobe knows.
BEGIN = "START TRANSACTION READ ONLY"
END = "COMMIT"


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
    return {"connect_timeout": None, "ssl": tls, "conv": _CONVERSIONS} | read_only


async def connect(**arguments: Any) -> Any:
    """aiomysql's connection, but one text runs one statement, as with PyMySQL.

    aiomysql.connect() always asks the server to run several statements in one text (CLIENT_MULTI_STATEMENTS), so
    "select 1; commit; set session transaction read write; create table ..." would end the read-only transaction
    and write. PyMySQL never asks, and the server refuses such a text (1064). So the connection is made unconnected,
    its public ``client_flag`` cleared of that flag, and connected by aiomysql's public way for that: ping(reconnect).
    """
    connection = aiomysql.Connection(**arguments)
    connection.client_flag &= ~CLIENT.MULTI_STATEMENTS
    try:
        await connection.ping(reconnect=True)
    except BaseException:
        connection.close()
        raise
    return connection


async def set_up(connection: Any, target: Target) -> Identity | None:
    """Set up a new session, and note which server it reached and its id there (app/kills.py)."""
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
) -> Fetched:
    """Run ``sql``; its column names and at most ``max_rows`` rows of its first result, or None if it has none.

    Without ``arguments`` the SQL is sent as written; with them, aiomysql binds them (%s, %(name)s) on the client.
    Rows are read as they come (an unbuffered cursor): when ``max_rows`` were read, the connection is closed so the
    server stops sending the rest, and the caller discards it. Later results (a procedure's) are read and dropped.
    """
    cursor = await connection.cursor(aiomysql.SSCursor)
    await cursor.execute(sql, arguments)
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
    begin_each_statement=True,
)
