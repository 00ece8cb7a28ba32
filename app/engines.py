"""One SQLAlchemy engine per target, and the dialect-specific ways to bound and stop its work."""

import contextlib
import itertools
import logging
import math
import os
import select
import socket
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any

import psycopg
import pymysql
from pymysql.constants import SERVER_STATUS
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from app import mysql_wire
from app.config import Target
from app.errors import ConnectFailed
from app.internals import pymysql_missing
from app.kills import Identity, Killer, KillSkipped, failure_reason, read_identity
from app.secret_files import TLS

log = logging.getLogger(__name__)

# A small pool: a target is probed by one or two Prometheus servers at a time.
POOL_SIZE = 2
MAX_OVERFLOW = 2
POOL_CAPACITY = POOL_SIZE + MAX_OVERFLOW
# Seconds a KILL QUERY or cancel request may take before we give up on stopping the query server-side.
CANCEL_TIMEOUT = 5.0
# Seconds a statement may outlast the probe's deadline: the stop sent at the deadline (KILL QUERY, cancel)
# comes first, so the probe reports a timeout, and the driver or server ends the statement if it was lost.
DEADLINE_GRACE = 1.0
# The least time a wait is given, however late it starts: a wait of 0 would mean "forever" to some drivers.
MIN_WAIT = 0.05
# libpq counts connect_timeout in whole seconds and turns anything under 2 into 2.
LIBPQ_MIN_CONNECT_TIMEOUT = 2

Interrupt = Callable[[], None]
# A statement's column names and rows; None if it has no result set.
Fetched = tuple[tuple[str, ...], Sequence[Sequence[Any]]] | None
Fetch = Callable[[Any, str], Fetched]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one kind of server is kept within a probe's deadline and read-only: one function or statement per concern."""

    connect_args: Callable[[Target], dict[str, Any]]  # the driver's engine-wide connect() arguments
    bound_connect: Callable[[dict[str, Any], float], None]  # a new connection gives up in these seconds
    bound_statement: Callable[[Any, float], None]  # the next statement gives up by this time.monotonic() (+ grace)
    stopper: Callable[[Engine, Any], Interrupt]  # stops the connection's statement from another thread
    sever: Callable[[Any], None]  # cuts the connection's socket from another thread: a read waiting on it ends
    command: Callable[[Any, str], None]  # runs sqlprobe's own statements (the read-only transaction's)
    # Runs a statement of queries.yml on a driver connection, with sqlprobe's own statements (without result sets)
    # before and after it ("" for none): in one round trip where the protocol allows.
    # It reads at most the rows given last: when it read that many, the rest may be unread and the connection closed
    # or out of step, so the caller discards it.
    fetch: Callable[[Any, str, str, str, int], Fetched]
    # The read-only transaction around a probe's statements: opened before the first, reopened after a failed one
    # (PostgreSQL aborts a transaction on error), closed after the last or before the connection goes back to the pool.
    begin: str
    restart: str
    end: str
    # True if a pooled connection is known dead without a round trip (the server closed it); None: no way to tell.
    closed_by_server: Callable[[Any], bool] | None = None
    connect: Callable[..., Any] | None = None  # opens a driver connection, if not the dialect's own way
    connected: Callable[[Any, Target], None] | None = None  # sets up a new driver connection, if it needs more
    # False if the statement just run ended the transaction it ran in (an implicit commit); None: none can.
    transaction_open: Callable[[Any], bool] | None = None
    # Binds arguments into the statement's text as the driver would (None: the driver binds them, with its cursor).
    render: Callable[[Any, str, Sequence[Any] | Mapping[str, Any]], str] | None = None


def create_target_engine(target: Target, killer: Killer | None = None) -> Engine:
    """Build the engine for ``target`` with bounded pool and network timeouts.

    ``killer`` sends its MySQL kills on threads of its own; without it, a kill runs on the thread that asks.
    """
    url = target.url
    options: dict[str, Any] = {}
    pool_class = url.get_dialect().get_pool_class(url)  # type: ignore[attr-defined]
    if issubclass(pool_class, QueuePool):  # not the pools of SQLite's in-memory databases
        options |= {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": target.timeout}
    dialect = dialect_of(url)
    if dialect is None:
        return create_engine(url, **options)
    # Autocommit: probes only read, so no transaction to open, roll back or keep a snapshot in.
    options |= {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        # SQLAlchemy would still end each checkout with a ROLLBACK: a round trip per probe for nothing.
        "skip_autocommit_rollback": True,
        "connect_args": dialect.connect_args(target),
    }
    engine = create_engine(url, **options)
    _connect_args[engine] = options["connect_args"]
    _stopping[engine] = (target, killer)

    # The probe's deadline, not the target's timeout: a silent host must not hold a worker thread past it.
    @event.listens_for(engine, "do_connect")
    def bound_connect(sa_dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if (seconds := _seconds_left()) is not None:
            dialect.bound_connect(cparams, seconds)
        return None if dialect.connect is None else dialect.connect(*cargs, **cparams)

    if dialect.connected is not None:
        set_up = dialect.connected

        @event.listens_for(engine, "connect")
        def connected(dbapi_connection: Any, record: Any) -> None:
            set_up(dbapi_connection, target)

    return engine


# What each engine passes to the driver's connect() besides its URL; the connection that stops a query needs it too.
_connect_args: "weakref.WeakKeyDictionary[Engine, Mapping[str, Any]]" = weakref.WeakKeyDictionary()


def connect_args_of(engine: Engine) -> Mapping[str, Any]:
    """The arguments ``engine`` passes to the driver's connect() besides its URL's (TLS, timeouts); may be empty."""
    return _connect_args.get(engine, {})


# One SSLContext per distinct TLS setting, for as long as an engine holds it: each costs hundreds of KiB.
_tls_contexts: "weakref.WeakValueDictionary[TLS, ssl.SSLContext]" = weakref.WeakValueDictionary()
_tls_contexts_lock = threading.Lock()


def tls_context(tls: TLS) -> ssl.SSLContext:
    """The SSLContext of these settings, shared by every connection of every engine (PyMySQL would build one each)."""
    with _tls_contexts_lock:
        context = _tls_contexts.get(tls)
        if context is None:
            context = _tls_contexts[tls] = _new_tls_context(tls)
        return context


def _new_tls_context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    context.check_hostname = tls.verify_identity  # the chain is verified either way
    # As PyMySQL does: the certificates MySQL and MariaDB generate fail Python 3.13's strict X.509 checks.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


_deadline = threading.local()


@contextmanager
def checkout_deadline(deadline: float) -> Iterator[None]:
    """Connections this thread checks out or opens inside the block are bounded by ``deadline`` (time.monotonic())."""
    _deadline.value = deadline
    try:
        yield
    finally:
        del _deadline.value


def _seconds_left() -> float | None:
    deadline: float | None = getattr(_deadline, "value", None)
    return None if deadline is None else max(MIN_WAIT, deadline - time.monotonic())


def fetch_with_cursor(
    dbapi_connection: Any,
    sql: str,
    max_rows: int = sys.maxsize,
    parameters: Sequence[Any] | Mapping[str, Any] | None = None,
) -> Fetched:
    """Run ``sql`` on a DBAPI cursor; its column names and at most ``max_rows`` rows, or None if no result set.

    Without ``parameters`` the driver sends the SQL as written (% and :name need no escaping); with them,
    ``sql`` is in the driver's parameter style and the driver binds them. When ``max_rows`` rows were read the
    rest is left unread (closing the cursor could read it): the caller discards the connection.
    """
    cursor = dbapi_connection.cursor()
    rows: Sequence[Sequence[Any]] = ()
    try:
        if parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        if cursor.description is None:
            return None
        rows = cursor.fetchmany(max_rows)
        return tuple(column[0] for column in cursor.description), rows
    finally:
        if len(rows) < max_rows:
            with contextlib.suppress(Exception):  # a cursor of a broken connection may fail to close
                cursor.close()


def fetch_bound(
    dbapi_connection: Any, sql: str, arguments: Sequence[Any] | Mapping[str, Any], max_rows: int = sys.maxsize
) -> Fetched:
    """``sql`` (in the driver's parameter style) with ``arguments`` bound by the driver; at most ``max_rows`` rows."""
    if isinstance(dbapi_connection, pymysql.connections.Connection):
        # PyMySQL binds on the client, into the SQL text (Cursor.mogrify, what its execute() does): mysql_wire then
        # reads the result within max_rows, where PyMySQL's cursor would read all of it first.
        return _fetch_mysql(dbapi_connection, dbapi_connection.cursor().mogrify(sql, arguments), max_rows=max_rows)
    return fetch_with_cursor(dbapi_connection, sql, max_rows, arguments)


def interrupter_for(engine: Engine, dbapi_connection: Any) -> Interrupt | None:
    """A callable that stops the statement running on ``dbapi_connection`` from another thread."""
    dialect = dialect_of(engine.url)
    if dialect is not None:
        return dialect.stopper(engine, dbapi_connection)
    if engine.url.get_backend_name() == "sqlite":
        return dbapi_connection.interrupt  # type: ignore[no-any-return]
    return None


# Per engine: the target it serves (names it in the log, holds the password to keep out of it) and its Killer.
_stopping: "weakref.WeakKeyDictionary[Engine, tuple[Target, Killer | None]]" = weakref.WeakKeyDictionary()
# Per open MySQL driver connection: the server it reached and its id there (None: the server would not say).
_identities: "weakref.WeakKeyDictionary[Any, Identity | None]" = weakref.WeakKeyDictionary()


def _stop_quietly(stop: Interrupt, target: Target, connection_id: int | None) -> None:
    try:
        stop()
    except Exception as error:  # noqa: BLE001 - best effort; the probe has already answered
        log.warning(
            "could not stop the running query of target %s (connection id %s): %s",
            target.name,
            connection_id,
            failure_reason(error, target.url.password),
            extra={"event": "kill_failed", "target": target.name, "connection_id": connection_id},
        )


def _mysql_timeouts(seconds: float) -> dict[str, float]:
    # read_timeout also bounds the handshake, so a host that accepts TCP and never answers
    # cannot hold a worker thread for longer than that.
    return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}


def _mysql_connect_args(target: Target) -> dict[str, Any]:
    # Without tls PyMySQL keeps its own default: TLS when the server offers it, unverified.
    tls = {} if target.tls is None else {"ssl": tls_context(target.tls)}
    # Every statement of the session runs in a read-only transaction: a DELETE in queries.yml fails.
    read_only = {"init_command": "SET SESSION TRANSACTION READ ONLY"} if target.read_only else {}
    return _mysql_timeouts(target.timeout) | tls | read_only | {"conv": _MYSQL_CONVERSIONS}


def _bit_value(data: bytes) -> int:
    """A BIT(n) cell (big-endian bytes, as the server sends it) as the number it is."""
    return int.from_bytes(data, "big")


# PyMySQL's converters, but BIT(n) cells are numbers, not bytes (PyMySQL leaves them as bytes, as MySQLdb does).
# The cursor and mysql_wire both decode with the connection's decoders, so both read BIT as a number.
_MYSQL_CONVERSIONS = {**pymysql.converters.conversions, pymysql.constants.FIELD_TYPE.BIT: _bit_value}


def _bound_mysql_connect(cparams: dict[str, Any], seconds: float) -> None:
    # Just after the deadline, so that the probe itself reports the timeout; the thread is free soon after.
    seconds = min(cparams["connect_timeout"], seconds + DEADLINE_GRACE)
    cparams |= {"connect_timeout": seconds, "read_timeout": seconds}


def _bound_mysql_statement(dbapi_connection: Any, deadline: float) -> None:
    # PyMySQL has no public per-call timeouts: these are what it (and mysql_wire) apply to the socket before each
    # read and write, set from the time left when the statement starts (a timeout set once per checkout would restart
    # on every read, and outlive the deadline). read_until lets mysql_wire wait on when a probe joining the run
    # moved the deadline while the statement ran.
    if hasattr(dbapi_connection, "_read_timeout"):
        seconds = max(MIN_WAIT, deadline - time.monotonic()) + DEADLINE_GRACE
        dbapi_connection._read_timeout = dbapi_connection._write_timeout = seconds
        dbapi_connection.read_until = deadline + DEADLINE_GRACE


def _sever_mysql(dbapi_connection: Any) -> None:
    sock: socket.socket | None = getattr(dbapi_connection, "_sock", None)  # PyMySQL has no public way to it
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile
            # The plain socket's shutdown, also under TLS: SSLSocket's would drop its SSL object under the reader.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _mysql_stopper(engine: Engine, dbapi_connection: Any) -> Interrupt:
    target, killer = _stopping[engine]
    identity = _identities.get(dbapi_connection)
    connection_id = None if identity is None else identity.connection_id
    kill = partial(_kill_mysql_query, engine, identity)
    if killer is None:
        return partial(_stop_quietly, kill, target, connection_id)
    discard = partial(_sever_mysql, dbapi_connection)
    return partial(killer.request, dbapi_connection, target.name, connection_id, kill, discard, target.url.password)


class _PyMySQLConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, but its default TLS context is built once per process, not once per connection."""

    # When the statement running may be waited for until (time.monotonic()): see _bound_mysql_statement.
    read_until = 0.0

    def connect(self, sock: Any = None) -> None:
        """PyMySQL's connect, handshake and set-up, all given up after ``connect_timeout`` (not each read)."""
        # PyMySQL's socket timeout counts per read: a server (or proxy) that trickles its greeting, a byte at a time,
        # would hold the worker thread for as long as it likes. Its socket is cut when the time is up.
        with _cut_if_still_connecting(self, self.connect_timeout or CANCEL_TIMEOUT):
            super().connect(sock)

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        # Without ssl options PyMySQL uses TLS when the server offers it, unverified ("preferred"), and for that
        # builds a default context per connection: about 55 ms holding the GIL (it loads the system's CA store)
        # and hundreds of KiB each. A fleet of refused or hung targets would starve the event loop.
        if sslp == {}:
            return _preferred_tls_context()
        context: ssl.SSLContext = super()._create_ssl_ctx(sslp)
        return context


# Connections still connecting, and when their sockets are cut: watched by one thread for the whole process.
_connecting: dict[Any, float] = {}
_connecting_changed = threading.Condition()
_connect_watcher: list[threading.Thread] = []


@contextmanager
def _cut_if_still_connecting(connection: Any, seconds: float) -> Iterator[None]:
    """Cut ``connection``'s socket if the block still runs after ``seconds``."""
    with _connecting_changed:
        _connecting[connection] = time.monotonic() + seconds
        if not _connect_watcher:
            _connect_watcher.append(threading.Thread(target=_cut_late, name="sqlprobe-connect-watch", daemon=True))
            _connect_watcher[0].start()
        _connecting_changed.notify()
    try:
        yield
    finally:
        with _connecting_changed:  # under the lock: once out of the block, its connection is never cut
            del _connecting[connection]


def _cut_late() -> None:
    with _connecting_changed:
        while True:
            now = time.monotonic()
            for connection, until in list(_connecting.items()):
                if until <= now:
                    _sever_mysql(connection)  # the handshake's read fails at once
                    _connecting[connection] = math.inf  # cut once; forgotten when its connect returns
            earliest = min(_connecting.values(), default=math.inf)
            _connecting_changed.wait(None if earliest == math.inf else earliest - now)


@cache
def _preferred_tls_context() -> ssl.SSLContext:
    """What PyMySQL's preferred TLS amounts to: encryption without verification (there is no CA to check with)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# Whether app/mysql_wire.py may be used: this PyMySQL has the internals it reads (app/internals.py).
_WIRE = not pymysql_missing()


def _fetch_mysql(
    dbapi_connection: Any, sql: str, before: str = "", after: str = "", max_rows: int = sys.maxsize
) -> Fetched:
    # PyMySQL's cursor and result objects cost a third of a small query's CPU: the same protocol without them.
    # mysql_wire also reads only max_rows rows; PyMySQL's cursor, left for statements of 4 MiB and more, reads all.
    if _WIRE and isinstance(dbapi_connection, pymysql.connections.Connection) and mysql_wire.fits(sql):
        return mysql_wire.fetch(dbapi_connection, sql, before, after, max_rows)
    fetch = partial(fetch_with_cursor, max_rows=max_rows)
    return one_by_one(fetch, _mysql_command, dbapi_connection, sql, before, after)


def one_by_one(
    fetch: Fetch, command: Callable[[Any, str], None], dbapi_connection: Any, sql: str, before: str, after: str
) -> Fetched:
    """``before`` and ``after`` (sqlprobe's own statements, "" for none) with ``command``, ``sql`` with ``fetch``,
    one round trip each."""
    if before:
        command(dbapi_connection, before)
    fetched = fetch(dbapi_connection, sql)
    if after:
        command(dbapi_connection, after)
    return fetched


def _mysql_closed_by_server(dbapi_connection: Any) -> bool:
    # An idle connection has nothing to read: anything there (end of stream, the error packet MySQL 8 sends before
    # closing an idle session) means the server has closed it. Looked at without waiting, and without a round trip.
    sock: socket.socket | None = getattr(dbapi_connection, "_sock", None)
    return sock is None or _readable(sock.fileno())


def _readable(fd: int) -> bool:
    poller = select.poll()  # not recv(MSG_DONTWAIT): on a socket with a timeout, Python waits for it first
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _postgresql_closed_by_server(dbapi_connection: Any) -> bool:
    # As on MySQL: an idle session has nothing to read, and a server that ends one (restart, pg_terminate_backend,
    # idle_session_timeout) sends its FATAL message and closes. So the first round trip on a reused connection is known
    # to be on a live one, and a connection lost from then on (killed during its statement) is not sent it again.
    return bool(dbapi_connection.closed) or _readable(dbapi_connection.fileno())


def _kill_mysql_query(engine: Engine, identity: Identity | None) -> None:
    """KILL QUERY over a new connection, if it reaches the server the statement runs on; else KillSkipped."""
    if identity is None:
        raise KillSkipped("identity_unknown")
    # A separate, unpooled connection: the target's pool may be exhausted by the very query we stop.
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    connect = _MYSQL.connect or pymysql.connections.Connection
    connection = connect(*cargs, **{**cparams, **connect_args_of(engine), **_mysql_timeouts(CANCEL_TIMEOUT)})
    try:
        here = read_identity(_fetch_mysql, connection)
        if here is None or here.server != identity.server:
            # Behind a proxy or load balancer, this connection reached another server: the id is someone else's.
            raise KillSkipped("other_server")
        connection.cursor().execute(f"KILL QUERY {int(identity.connection_id)}")
    finally:
        connection.close()


def _libpq_seconds(seconds: float) -> int:
    return max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(seconds))


def _postgresql_connect_args(target: Target) -> dict[str, Any]:
    # The server itself ends a statement that outlives any probe's deadline (a probe waits at most the target's
    # timeout), even when the cancel request is lost. Appended to the DSN's own options: ours have the last word.
    milliseconds = _milliseconds(target.timeout)
    options = [str(target.url.query.get("options", "")), f"-c statement_timeout={milliseconds}"]
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


def _milliseconds(seconds: float) -> int:
    """A timeout in whole milliseconds, with the grace that lets sqlprobe's own stop come first."""
    return math.ceil((seconds + DEADLINE_GRACE) * 1000)


def _libpq_tls(tls: TLS) -> dict[str, str]:
    # Without a ca, the system's trust store (libpq refuses that with verify-ca, and says so at connect).
    parameters = {"sslmode": "verify-full" if tls.verify_identity else "verify-ca", "sslrootcert": "system"}
    files = {"sslrootcert": tls.ca, "sslcert": tls.cert, "sslkey": tls.key}
    return parameters | {name: str(path) for name, path in files.items() if path is not None}


def _bound_postgresql_connect(cparams: dict[str, Any], seconds: float) -> None:
    cparams["connect_timeout"] = min(cparams["connect_timeout"], _libpq_seconds(seconds))


def _no_bound(dbapi_connection: Any, deadline: float) -> None:
    """PostgreSQL's statements are bounded by the server's statement_timeout and sqlprobe's cancel and sever."""


def _sever_postgresql(dbapi_connection: Any) -> None:
    # A duplicate of libpq's descriptor: shutting it down ends the connection under libpq's feet.
    with (
        contextlib.suppress(OSError, psycopg.Error),  # closed meanwhile
        socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)


def _fetch_postgresql(
    dbapi_connection: Any, sql: str, before: str = "", after: str = "", max_rows: int = sys.maxsize
) -> Fetched:
    stream = partial(_stream_postgresql, max_rows=max_rows)
    return one_by_one(stream, _postgresql_command, dbapi_connection, sql, before, after)


def _stream_postgresql(dbapi_connection: Any, sql: str, max_rows: int = sys.maxsize) -> Fetched:
    # The extended protocol (stream) takes one statement per text: with the simple one, a text could end the
    # read-only transaction ("...; commit; delete ...") and go on writing. A stream also receives rows as they are
    # read, where a plain cursor has libpq receive the whole result first: closing it after max_rows rows cancels
    # the statement on the server (the connection stays usable).
    cursor = dbapi_connection.cursor()
    try:
        stream = cursor.stream(sql)
        rows = list(itertools.islice(stream, max_rows))
        stream.close()
        if cursor.description is None:
            return None
        return tuple(column.name for column in cursor.description), rows
    finally:
        with contextlib.suppress(Exception):  # a cursor of a broken connection may fail to close
            cursor.close()


def _postgresql_command(dbapi_connection: Any, sql: str) -> None:
    dbapi_connection.execute(sql)  # the simple protocol: sqlprobe's own statements may come several in one text


def _mysql_command(dbapi_connection: Any, sql: str) -> None:
    _fetch_mysql(dbapi_connection, sql)


def _mysql_transaction_open(dbapi_connection: Any) -> bool:
    # From the last answer's status (mysql_wire keeps it from result sets too): CHECK TABLE, ANALYZE TABLE, OPTIMIZE
    # TABLE... commit the transaction they run in and still return rows; after them the session is in autocommit,
    # where SET STATEMENT tx_read_only = 0 FOR DELETE ... deletes.
    if not dbapi_connection.open:
        return True  # closed (its rows cut short): no statement follows on it
    return bool(dbapi_connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)


def _render_mysql(dbapi_connection: Any, sql: str, arguments: Sequence[Any] | Mapping[str, Any]) -> str:
    # PyMySQL binds on the client anyway: its cursor's mogrify() is the text its execute() would send.
    rendered: str = dbapi_connection.cursor().mogrify(sql, arguments)
    return rendered


def _mysql_connected(dbapi_connection: Any, target: Target) -> None:
    """Set up a new session, and note which server it reached and its id there (app/kills.py): one round trip."""
    setup = ""
    # A session cut off inside its read-only transaction (a partition) ends, and lets go of its metadata locks, soon
    # after the deadline rather than at wait_timeout. MariaDB only (10.3 on): MySQL has no such setting.
    if target.read_only and "MariaDB" in dbapi_connection.get_server_info():
        setup = f"SET SESSION idle_readonly_transaction_timeout = {math.ceil(target.timeout + DEADLINE_GRACE)}"
    try:
        identity = read_identity(partial(_fetch_after, setup), dbapi_connection)
    except pymysql.err.MySQLError:
        if not dbapi_connection.open:
            raise  # the connection itself failed: as any failure to connect
        if setup:
            _mysql_command(dbapi_connection, setup)  # which of the two was refused: the setup must not be
        identity = None  # a proxy that refuses the query, say: this connection's statements are never killed
    _identities[dbapi_connection] = identity


def _fetch_after(before: str, dbapi_connection: Any, sql: str) -> Fetched:
    return _fetch_mysql(dbapi_connection, sql, before)


def _postgresql_stopper(engine: Engine, dbapi_connection: Any) -> Interrupt:
    # A cancel request on a connection of its own, so it works while the pool is exhausted.
    cancel = partial(dbapi_connection.cancel_safe, timeout=CANCEL_TIMEOUT)
    return partial(_stop_quietly, cancel, _stopping[engine][0], dbapi_connection.info.backend_pid)


_MYSQL = Dialect(
    _mysql_connect_args,
    _bound_mysql_connect,
    _bound_mysql_statement,
    _mysql_stopper,
    _sever_mysql,
    _mysql_command,
    fetch=_fetch_mysql,
    # Inside a read-only transaction even SET STATEMENT tx_read_only=0 FOR DELETE ... fails.
    begin="START TRANSACTION READ ONLY",
    restart="START TRANSACTION READ ONLY",  # ends the current one
    end="COMMIT",
    # PyMySQL's own connection class when this PyMySQL lacks the internals it uses (app/internals.py).
    connect=None if pymysql_missing() else _PyMySQLConnection,
    connected=_mysql_connected,
    closed_by_server=_mysql_closed_by_server,
    transaction_open=_mysql_transaction_open,
    render=_render_mysql,
)
_POSTGRESQL = Dialect(
    _postgresql_connect_args,
    _bound_postgresql_connect,
    _no_bound,
    _postgresql_stopper,
    _sever_postgresql,
    _postgresql_command,
    fetch=_fetch_postgresql,
    begin="BEGIN READ ONLY",
    restart="ROLLBACK; BEGIN READ ONLY",
    # RESET ALL: what a statement set with set_config() (search_path...) does not outlive the probe; RESET ROLE: nor
    # the role (set_config('role', …) too, which RESET ALL leaves alone); nor does a session-level advisory lock a
    # statement took (pg_advisory_lock() returns a row, and holds it until unlocked).
    end="COMMIT; RESET ALL; RESET ROLE; SELECT pg_advisory_unlock_all()",
    closed_by_server=_postgresql_closed_by_server,
)


def dialect_of(url: URL) -> Dialect | None:
    """How sqlprobe bounds and stops the work of this URL's driver; None for drivers it has no special way for."""
    backend = url.get_backend_name()
    if backend in {"mysql", "mariadb"} and url.get_driver_name() == "pymysql":
        return _MYSQL
    if backend == "postgresql" and url.get_driver_name() == "psycopg":
        return _POSTGRESQL
    return None


@dataclass(slots=True)
class _Cached:
    """An engine, what it was built from, and how many probes use it right now."""

    engine: Engine
    target: Target  # the one it was built for: a probe of the same object skips comparing settings
    # Its connections checked out at once: at most what its pool holds, so that the pool itself never waits.
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(POOL_SIZE + MAX_OVERFLOW)
    )
    leases: int = 0
    retired: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def settings(self) -> Target:
        """What the engine was built from (see _engine_settings)."""
        return _engine_settings(self.target)


def _engine_settings(target: Target) -> Target:
    """``target`` without what does not shape its engine: targets equal in this share an engine across reloads."""
    return replace(target, query_sets=(), labels={}, queries=(), metrics=())


class EngineCache:
    """Engines keyed by target name, created on first use and reused after; replaced when a reload changes them.

    ``current`` gives the target of that name in the config served now (None: not there); without it, any
    target may build an engine.
    """

    def __init__(self, current: Callable[[str], Target | None] | None = None) -> None:
        self._cached: dict[str, _Cached] = {}
        self._retired: list[_Cached] = []
        self._lock = threading.Lock()
        self._current = current
        self.killer = Killer()  # sends the MySQL kills of every engine here

    @contextmanager
    def lease(self, target: Target) -> Iterator[tuple[Engine, threading.BoundedSemaphore]]:
        """The engine of ``target`` and its checkout slots, for one probe; one retired is disposed after its last.

        A run queued under a config that a reload has replaced since gets the engine of the config served now:
        it must not build an engine for a removed target (nobody would dispose it), nor replace the new config's
        engine with one for its old settings. For a removed target it raises ConnectFailed.
        """
        idle = None
        with self._lock:
            target = self._served_now(target)
            cached = self._cached.get(target.name)
            if cached is None or (cached.target is not target and cached.settings != _engine_settings(target)):
                # First probe, or a probe on a reloaded config that changed this target's connection.
                if cached is not None:
                    idle = self._retire(target.name)
                cached = self._cached[target.name] = _Cached(create_target_engine(target, self.killer), target)
            cached.leases += 1
        if idle is not None:
            idle.engine.dispose()
        try:
            yield cached.engine, cached.slots
        finally:
            with self._lock:
                cached.leases -= 1
                cached.last_used = time.monotonic()
                done = cached.retired and cached.leases == 0
                if done:
                    self._retired.remove(cached)
            if done:
                cached.engine.dispose()

    def _served_now(self, target: Target) -> Target:
        """The target of this name in the config served now."""
        if self._current is None:
            return target
        current = self._current(target.name)
        if current is None:
            raise ConnectFailed(
                "the target was removed (by a reload, or let go as a module target) while this probe waited"
            )
        return current

    def retain(self, targets: Mapping[str, Target]) -> list[str]:
        """Retire the engines of targets gone from ``targets`` or changed in it; return their names."""
        with self._lock:
            stale = [
                name
                for name, cached in self._cached.items()
                if name not in targets or cached.settings != _engine_settings(targets[name])
            ]
            idle = [self._retire(name) for name in stale]
        for cached in idle:
            if cached is not None:
                cached.engine.dispose()
        return stale

    def forget(self, names: list[str]) -> None:
        """Retire the engines of ``names`` (module targets let go); each is disposed once no probe uses it."""
        with self._lock:
            idle = [self._retire(name) for name in names if name in self._cached]
        for cached in idle:
            if cached is not None:
                cached.engine.dispose()

    def dispose_idle(self, idle_for: float) -> list[str]:
        """Dispose the engines no probe used for ``idle_for`` seconds; return their targets' names."""
        since = time.monotonic() - idle_for
        with self._lock:
            idle = [name for name, cached in self._cached.items() if cached.leases == 0 and cached.last_used < since]
            engines = [self._cached.pop(name).engine for name in idle]
        for engine in engines:
            engine.dispose()
        return idle

    def _retire(self, name: str) -> _Cached | None:
        """Forget ``name``'s engine; return it if no probe uses it (to dispose), else dispose at its last lease."""
        cached = self._cached.pop(name)
        if cached.leases == 0:
            return cached
        cached.retired = True
        self._retired.append(cached)
        return None

    def __len__(self) -> int:
        return len(self._cached)

    def dispose_all(self) -> None:
        """Close every pooled connection and forget the engines."""
        self.killer.close()
        with self._lock:
            engines = [cached.engine for cached in [*self._cached.values(), *self._retired]]
            self._cached, self._retired = {}, []
        for engine in engines:
            engine.dispose()
