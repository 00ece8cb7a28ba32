"""PostgreSQL on the event loop, through psycopg 3's own asyncio connection, by its public API."""

import contextlib
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.pq import TransactionStatus

from app.config import Target
from app.config.secret_files import TLS
from app.config.session_settings import SettingValue
from app.config.statements import refuse_unless_read
from app.drivers.dialect import CANCEL_TIMEOUT, DEADLINE_GRACE, Dialect, Fetched
from app.drivers.kills import Identity

# libpq counts connect_timeout in whole seconds and turns anything under 2 into 2.
LIBPQ_MIN_CONNECT_TIMEOUT = 2


def _libpq_seconds(seconds: float) -> int:
    return max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(seconds))


def _milliseconds(seconds: float) -> int:
    """A timeout in whole milliseconds, with the grace that lets sqlprobe's own stop come first."""
    return math.ceil((seconds + DEADLINE_GRACE) * 1000)


def connect_args(target: Target) -> dict[str, Any]:
    """psycopg's connect() arguments besides the URL's: timeouts, keepalives, read-only sessions, TLS."""
    # The server itself ends a statement that outlives any probe's deadline (a probe waits at most the target's
    # timeout), even when the cancel request is lost. Appended to the DSN's own options: ours have the last word.
    milliseconds = _milliseconds(target.timeout)
    # A statement behind a locked table (LOCK TABLE, an ALTER TABLE) fails after the bound rather than holding the
    # probe. Both are the session's defaults: RESET ALL at a probe's end comes back to them.
    lock_wait = math.ceil(target.lock_wait_timeout * 1000)
    options = [
        str(target.url.query.get("options", "")),
        f"-c statement_timeout={milliseconds}",
        f"-c lock_timeout={lock_wait}",
    ]
    # The target's own (session_settings:): the session's defaults too, which RESET ALL comes back to. Last, so a
    # statement_timeout of its own (never longer than the timeout: checked at load) has the last word.
    options += [f"-c {name}={_option_value(value)}" for name, value in target.session_settings]
    if target.read_only:
        # A session cut off inside its read-only transaction (a partition) ends, and lets go of its table locks, soon.
        options += ["-c default_transaction_read_only=on", f"-c idle_in_transaction_session_timeout={milliseconds}"]
    tls = {} if target.tls is None else _libpq_tls(target.tls)
    return {
        "connect_timeout": _libpq_seconds(target.timeout),
        "options": " ".join(options).strip(),
        # A peer that vanishes (host down, partition) is noticed by the kernel: probes of an idle pooled connection
        # after the target's timeout without traffic, and sent data unacknowledged for longer than the timeout.
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(target.timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": milliseconds,
    } | tls


def _option_value(value: SettingValue) -> str:
    """A session setting's value in libpq's options (checked at load: no blank or backslash in it)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _libpq_tls(tls: TLS) -> dict[str, str]:
    # Without a ca, the system's trust store (libpq refuses that with verify-ca, and says so at connect).
    parameters = {"sslmode": "verify-full" if tls.verify_identity else "verify-ca", "sslrootcert": "system"}
    files = {"sslrootcert": tls.ca, "sslcert": tls.cert, "sslkey": tls.key}
    return parameters | {name: str(path) for name, path in files.items() if path is not None}


async def fetch(
    connection: Any,
    sql: str,
    max_rows: int = sys.maxsize,
    arguments: Sequence[Any] | Mapping[str, Any] | None = None,
    after: str = "",
    reads_only: bool = False,
    timeout: float | None = None,
) -> Fetched:
    """Run ``sql`` (one statement: the extended protocol takes no more, so a text cannot end the read-only
    transaction and go on writing); its columns and at most ``max_rows`` rows, read as they come. Closing the
    stream early cancels the statement on the server, and the connection stays usable. Nothing is sent ``after``
    (the dialect does not chain). With ``reads_only``, a statement that does not only read is refused (the server
    binds the ``arguments``: its text is ``sql``)."""
    if reads_only:
        refuse_unless_read(sql, "postgresql")
    if timeout is None:
        return await _fetch(connection, sql, max_rows, arguments)
    # The statement's own limit, as statement_timeout: for the probe's transaction only (SET LOCAL, which its end
    # or a ROLLBACK undoes), or for the session of a target without it, set back after.
    scope = "LOCAL " if connection.info.transaction_status == TransactionStatus.INTRANS else ""
    await connection.execute(f"SET {scope}statement_timeout = {math.ceil(timeout * 1000)}")
    try:
        fetched = await _fetch(connection, sql, max_rows, arguments)
    except Exception:
        if not scope and not connection.closed:  # in a transaction, its ROLLBACK undoes the SET LOCAL
            with contextlib.suppress(Exception):
                await connection.execute("SET statement_timeout TO DEFAULT")
        raise
    await connection.execute(f"SET {scope}statement_timeout TO DEFAULT")
    return fetched


async def _fetch(
    connection: Any, sql: str, max_rows: int, arguments: Sequence[Any] | Mapping[str, Any] | None
) -> Fetched:
    cursor = connection.cursor()
    try:
        rows = []
        stream = cursor.stream(sql, arguments)
        try:
            if max_rows > 0:
                async for row in stream:
                    rows.append(row)
                    if len(rows) >= max_rows:
                        break
        finally:
            await stream.aclose()
        if cursor.description is None:
            return None
        return tuple(column.name for column in cursor.description), rows
    finally:
        await cursor.close()


async def command(connection: Any, sql: str) -> None:
    """sqlprobe's own statements, with the simple protocol: they may come several in one text."""
    await connection.execute(sql)


async def ping(connection: Any) -> None:
    """The cheapest round trip: an empty statement."""
    await connection.execute(";")


def close(connection: Any) -> None:
    """Close at once, without waiting: libpq's own connection ends (its socket closed), and psycopg sees it closed."""
    connection.pgconn.finish()


async def cancel(connection: Any, url_args: Mapping[str, Any], identity: Identity | None) -> None:
    """A cancel request, on a connection of its own, so it works while the pool is exhausted."""
    await connection.cancel_safe(timeout=CANCEL_TIMEOUT)


POSTGRESQL = Dialect(
    driver="psycopg",
    connect_args=connect_args,
    fetch=fetch,
    command=command,
    ping=ping,
    close=close,
    begin="BEGIN READ ONLY",
    restart="ROLLBACK; BEGIN READ ONLY",
    # RESET ALL: what a statement set with set_config() (search_path...) does not outlive the probe; RESET ROLE: nor
    # the role (set_config('role', …) too, which RESET ALL leaves alone); nor does a session-level advisory lock a
    # statement took (pg_advisory_lock() returns a row, and holds it until unlocked).
    end="COMMIT; RESET ALL; RESET ROLE; SELECT pg_advisory_unlock_all()",
    stop=cancel,
)
