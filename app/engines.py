"""One SQLAlchemy engine per target, and the dialect-specific ways to stop a running query."""

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from app.config import Target

log = logging.getLogger(__name__)

# A small pool: a target is probed by one or two Prometheus servers at a time.
POOL_SIZE = 2
MAX_OVERFLOW = 2
# Seconds a KILL QUERY may take before we give up on stopping the query server-side.
CANCEL_TIMEOUT = 5.0

Interrupt = Callable[[], None]


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in {"mysql", "mariadb"}


def _mysql_timeouts(seconds: float) -> dict[str, float]:
    # read_timeout also bounds the handshake, so a host that accepts TCP and never answers
    # cannot hold a worker thread for longer than the target's timeout.
    return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}


def create_target_engine(target: Target) -> Engine:
    """Build the engine for ``target`` with bounded pool and network timeouts."""
    options: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": target.timeout}
    if _is_mysql(target.url):
        # Autocommit: probes only read, so no transaction to open, roll back or keep a snapshot in.
        options |= {
            "isolation_level": "AUTOCOMMIT",
            "pool_reset_on_return": None,
            "connect_args": _mysql_timeouts(target.timeout),
        }
    return create_engine(target.url, **options)


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
