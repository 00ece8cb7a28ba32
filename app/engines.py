"""One SQLAlchemy engine per target, and the dialect-specific ways to bound and stop its work."""

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from app.config import Target

log = logging.getLogger(__name__)

# A small pool: a target is probed by one or two Prometheus servers at a time.
POOL_SIZE = 2
MAX_OVERFLOW = 2
# Seconds a KILL QUERY or cancel request may take before we give up on stopping the query server-side.
CANCEL_TIMEOUT = 5.0
# Seconds a statement may outlast the probe's deadline: the stop sent at the deadline (KILL QUERY, cancel)
# comes first, so the probe reports a timeout, and the driver or server ends the statement if it was lost.
DEADLINE_GRACE = 1.0
# libpq counts connect_timeout in whole seconds and turns anything under 2 into 2.
LIBPQ_MIN_CONNECT_TIMEOUT = 2

Interrupt = Callable[[], None]


@dataclass(frozen=True, slots=True)
class _Dialect:
    """How one kind of server is kept within a probe's deadline: one function per concern."""

    connect_args: Callable[[Target], dict[str, Any]]  # the driver's engine-wide connect() arguments
    bound_connect: Callable[[dict[str, Any], float], None]  # a new connection gives up in these seconds
    bound_checkout: Callable[[Any, float], None]  # a checked-out connection's statements end soon after
    stopper: Callable[[Engine, Any], Interrupt]  # stops the connection's statement from another thread


def create_target_engine(target: Target) -> Engine:
    """Build the engine for ``target`` with bounded pool and network timeouts."""
    url = target.url
    options: dict[str, Any] = {}
    pool_class = url.get_dialect().get_pool_class(url)  # type: ignore[attr-defined]
    if issubclass(pool_class, QueuePool):  # not the pools of SQLite's in-memory databases
        options |= {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": target.timeout}
    dialect = _dialect_of(url)
    if dialect is None:
        return create_engine(url, **options)
    # Autocommit: probes only read, so no transaction to open, roll back or keep a snapshot in.
    options |= {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "connect_args": dialect.connect_args(target),
    }
    engine = create_engine(url, **options)

    # The probe's deadline, not the target's timeout: a silent host must not hold a worker thread past it.
    @event.listens_for(engine, "do_connect")
    def bound_connect(sa_dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if (seconds := _seconds_left()) is not None:
            dialect.bound_connect(cparams, seconds)

    @event.listens_for(engine, "checkout")
    def bound_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if (seconds := _seconds_left()) is not None:
            dialect.bound_checkout(dbapi_connection, seconds)

    return engine


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
    return None if deadline is None else max(0.05, deadline - time.monotonic())


def interrupter_for(engine: Engine, dbapi_connection: Any) -> Interrupt | None:
    """A callable that stops the statement running on ``dbapi_connection`` from another thread."""
    dialect = _dialect_of(engine.url)
    if dialect is not None:
        return partial(_stop_quietly, dialect.stopper(engine, dbapi_connection), engine.url.host)
    if engine.url.get_backend_name() == "sqlite":
        return dbapi_connection.interrupt  # type: ignore[no-any-return]
    return None


def _stop_quietly(stop: Interrupt, host: str | None) -> None:
    try:
        stop()
    except Exception as error:  # noqa: BLE001 - best effort; the probe has already answered
        log.info("could not stop the running query on %s: %s", host, type(error).__name__)


def _mysql_timeouts(seconds: float) -> dict[str, float]:
    # read_timeout also bounds the handshake, so a host that accepts TCP and never answers
    # cannot hold a worker thread for longer than that.
    return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}


def _mysql_connect_args(target: Target) -> dict[str, Any]:
    return _mysql_timeouts(target.timeout)


def _bound_mysql_connect(cparams: dict[str, Any], seconds: float) -> None:
    seconds = min(cparams["connect_timeout"], seconds)
    cparams |= {"connect_timeout": seconds, "read_timeout": seconds}


def _bound_mysql_reads(dbapi_connection: Any, seconds: float) -> None:
    # PyMySQL has no public per-call read timeout; _read_timeout is what it applies before each packet read.
    if hasattr(dbapi_connection, "_read_timeout"):
        dbapi_connection._read_timeout = seconds + DEADLINE_GRACE


def _mysql_stopper(engine: Engine, dbapi_connection: Any) -> Interrupt:
    return partial(_kill_mysql_query, engine, dbapi_connection.thread_id())


def _kill_mysql_query(engine: Engine, session_id: int) -> None:
    # A separate, unpooled connection: the target's pool may be exhausted by the very query we stop.
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    connection = engine.dialect.connect(*cargs, **{**cparams, **_mysql_timeouts(CANCEL_TIMEOUT)})
    try:
        connection.cursor().execute(f"KILL QUERY {int(session_id)}")
    finally:
        connection.close()


def _libpq_seconds(seconds: float) -> int:
    return max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(seconds))


def _postgresql_connect_args(target: Target) -> dict[str, Any]:
    # Appended to the DSN's own options, so that read-only has the last word.
    options = f"{target.url.query.get('options', '')} -c default_transaction_read_only=on".strip()
    return {"connect_timeout": _libpq_seconds(target.timeout), "options": options}


def _bound_postgresql_connect(cparams: dict[str, Any], seconds: float) -> None:
    cparams["connect_timeout"] = min(cparams["connect_timeout"], _libpq_seconds(seconds))


def _bound_postgresql_statements(dbapi_connection: Any, seconds: float) -> None:
    # The server itself ends a statement that outlives the deadline, even when the cancel request is lost.
    try:
        dbapi_connection.execute(f"SET statement_timeout = {math.ceil((seconds + DEADLINE_GRACE) * 1000)}")
    except psycopg.Error as error:
        # The first statement on a pooled connection that went stale (server restarted, session
        # terminated): DisconnectionError makes the pool replace it with a fresh one.
        raise DisconnectionError(type(error).__name__) from error


def _postgresql_stopper(engine: Engine, dbapi_connection: Any) -> Interrupt:
    # A cancel request on a connection of its own, so it works while the pool is exhausted.
    return partial(dbapi_connection.cancel_safe, timeout=CANCEL_TIMEOUT)


_MYSQL = _Dialect(_mysql_connect_args, _bound_mysql_connect, _bound_mysql_reads, _mysql_stopper)
_POSTGRESQL = _Dialect(
    _postgresql_connect_args, _bound_postgresql_connect, _bound_postgresql_statements, _postgresql_stopper
)


def _dialect_of(url: URL) -> _Dialect | None:
    backend = url.get_backend_name()
    if backend in {"mysql", "mariadb"}:
        return _MYSQL
    if backend == "postgresql" and url.get_driver_name() == "psycopg":
        return _POSTGRESQL
    return None


class EngineCache:
    """Engines keyed by target name, created on first use and reused after."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, target: Target) -> Engine:
        """The engine of ``target``, created if this is its first probe."""
        engine = self._engines.get(target.name)
        if engine is None:
            with self._lock:
                engine = self._engines.get(target.name)
                if engine is None:
                    engine = self._engines[target.name] = create_target_engine(target)
        return engine

    def __len__(self) -> int:
        return len(self._engines)

    def dispose_all(self) -> None:
        """Close every pooled connection and forget the engines."""
        with self._lock:
            engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.dispose()
