"""One SQLAlchemy engine per target, and the dialect-specific ways to stop a running query."""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from app.config import Target

log = logging.getLogger(__name__)

# A small pool: a target is probed by one or two Prometheus servers at a time.
POOL_SIZE = 2
MAX_OVERFLOW = 2
# Seconds a KILL QUERY may take before we give up on stopping the query server-side.
CANCEL_TIMEOUT = 5.0
# Seconds a read may outlast the probe's deadline, so the KILL QUERY's answer can arrive first.
READ_GRACE = 1.0

Interrupt = Callable[[], None]


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in {"mysql", "mariadb"}


def _mysql_timeouts(seconds: float) -> dict[str, float]:
    # read_timeout also bounds the handshake, so a host that accepts TCP and never answers
    # cannot hold a worker thread for longer than that.
    return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}


def create_target_engine(target: Target) -> Engine:
    """Build the engine for ``target`` with bounded pool and network timeouts."""
    url = target.url
    options: dict[str, Any] = {}
    pool_class = url.get_dialect().get_pool_class(url)  # type: ignore[attr-defined]
    if issubclass(pool_class, QueuePool):  # not the pools of SQLite's in-memory databases
        options |= {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": target.timeout}
    if not _is_mysql(url):
        return create_engine(url, **options)
    # Autocommit: probes only read, so no transaction to open, roll back or keep a snapshot in.
    options |= {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "connect_args": _mysql_timeouts(target.timeout),
    }
    engine = create_engine(url, **options)
    event.listen(engine, "do_connect", _bound_mysql_connect)
    return engine


_connect_deadline = threading.local()


@contextmanager
def connect_deadline(deadline: float) -> Iterator[None]:
    """Connections this thread opens inside the block give up at ``deadline`` (time.monotonic())."""
    _connect_deadline.value = deadline
    try:
        yield
    finally:
        del _connect_deadline.value


def _bound_mysql_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
    deadline: float | None = getattr(_connect_deadline, "value", None)
    if deadline is not None:
        # The probe's deadline, not the target's timeout: a silent host must not hold a worker thread past it.
        seconds = max(0.05, min(cparams["connect_timeout"], deadline - time.monotonic()))
        cparams |= {"connect_timeout": seconds, "read_timeout": seconds}


def bound_reads(connection: Connection, deadline: float) -> None:
    """Make every read on ``connection`` give up shortly after ``deadline`` (time.monotonic())."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    # PyMySQL has no public per-call read timeout; _read_timeout is what it applies before each packet read.
    if _is_mysql(connection.engine.url) and hasattr(dbapi_connection, "_read_timeout"):
        dbapi_connection._read_timeout = max(0.05, deadline - time.monotonic()) + READ_GRACE


def interrupter_for(engine: Engine, dbapi_connection: Any) -> Interrupt | None:
    """A callable that stops the statement running on ``dbapi_connection`` from another thread."""
    if _is_mysql(engine.url):
        session_id = dbapi_connection.thread_id()
        return lambda: _kill_mysql_query(engine, session_id)
    if engine.url.get_backend_name() == "sqlite":
        return dbapi_connection.interrupt  # type: ignore[no-any-return]
    return None


def _kill_mysql_query(engine: Engine, session_id: int) -> None:
    # A separate, unpooled connection: the target's pool may be exhausted by the very query we stop.
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    try:
        connection = engine.dialect.connect(*cargs, **{**cparams, **_mysql_timeouts(CANCEL_TIMEOUT)})
        try:
            connection.cursor().execute(f"KILL QUERY {int(session_id)}")
        finally:
            connection.close()
    except Exception as error:  # noqa: BLE001 - best effort; the probe has already answered
        log.info("could not stop query of session %s on %s: %s", session_id, engine.url.host, type(error).__name__)


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
