"""One SQLAlchemy engine per target: an asyncio engine for MySQL/MariaDB and PostgreSQL, a blocking one for the
rest; created on first use, reused after, replaced when a reload changes its target, disposed when idle."""

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from app.config import Target
from app.drivers.blocking import BlockingDriver, Threads
from app.drivers.credentials import CredentialSource
from app.drivers.dialect import Dialect
from app.drivers.driver import Driver
from app.drivers.kills import Killer
from app.drivers.mysql import MYSQL
from app.drivers.postgresql import POSTGRESQL
from app.errors import ConnectFailed

log = logging.getLogger(__name__)

# A small pool: a target is probed by one or two Prometheus servers at a time.
POOL_SIZE = 2
MAX_OVERFLOW = 2
POOL_CAPACITY = POOL_SIZE + MAX_OVERFLOW

AnyDriver = Driver | BlockingDriver


def dialect_of(url: URL) -> Dialect | None:
    """The asyncio dialect that probes this URL's server; None for drivers probed on threads (SQLite...)."""
    backend = url.get_backend_name()
    if backend in {"mysql", "mariadb"} and url.get_driver_name() in {"pymysql", "aiomysql"}:
        return MYSQL
    if backend == "postgresql" and url.get_driver_name() == "psycopg":
        return POSTGRESQL
    return None


def _build(target: Target, credentials: CredentialSource | None = None) -> AsyncEngine | Engine:
    """The engine for ``target``: its pool bounded, autocommit (probes only read: sqlprobe's own read-only
    transaction is all), no reset round trip when a connection goes back to the pool. With ``credentials``, each new
    connection is made with the ones current then (pooled connections keep those they were made with)."""
    url = target.url
    dialect = dialect_of(url)
    if dialect is None:
        options: dict[str, Any] = {}
        if issubclass(url.get_dialect().get_pool_class(url), QueuePool):  # type: ignore[attr-defined]
            options = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_timeout": target.timeout}
        if url.get_backend_name() == "sqlite" and url.get_driver_name() == "pysqlite":
            # A session's calls all run on one thread (app/drivers/blocking.py), but the engine is disposed from another
            # (a reload's, the idle sweep's, the shut-down's), once no probe uses it: sqlite3 must let it close them.
            options["connect_args"] = {"check_same_thread": False}
        return create_engine(url, **options)
    async_url = _async_url(url, dialect)
    connecting: dict[str, Any] = {"connect_args": dialect.connect_args(target)}
    if dialect.connect is not None:  # SQLAlchemy's documented way to connect otherwise: async_creator
        arguments = connect_arguments(async_url, dialect, target)
        if credentials is None:
            connecting = {"async_creator": partial(dialect.connect, **arguments)}
        else:
            connecting = {"async_creator": partial(_connect_leased, dialect.connect, arguments, credentials)}
    engine = create_async_engine(
        async_url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=target.timeout,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        # SQLAlchemy would still end each checkout with a ROLLBACK: a round trip per probe for nothing.
        skip_autocommit_rollback=True,
        **connecting,
    )
    if credentials is not None and dialect.connect is None:
        # SQLAlchemy's documented hook for arguments decided per connection.
        event.listen(engine.sync_engine, "do_connect", partial(_leased_parameters, credentials))
    return engine


async def _connect_leased(connect: Callable[..., Any], arguments: dict[str, Any], credentials: CredentialSource) -> Any:
    """A new connection, made with the credentials current now."""
    return await connect(**(arguments | credentials.arguments()))


def _leased_parameters(credentials: CredentialSource, _dialect: Any, _record: Any, _args: Any, params: Any) -> None:
    params.update(credentials.arguments())


def connect_arguments(async_url: URL, dialect: Dialect, target: Target) -> dict[str, Any]:
    """What the driver's connect() gets: the URL's arguments as SQLAlchemy gives them, then the dialect's."""
    _, url_args = async_url.get_dialect()().create_connect_args(async_url)
    return {**url_args, **dialect.connect_args(target)}


def _async_url(url: URL, dialect: Dialect) -> URL:
    """``url`` with the dialect's asyncio driver (targets.yml keeps mysql+pymysql://, postgresql+psycopg://)."""
    return url.set(drivername=f"{url.get_backend_name()}+{dialect.driver}")


@dataclass(slots=True)
class _Cached:
    """An engine, what it was built from, and how many probes use it right now."""

    engine: AsyncEngine | Engine
    target: Target  # the one it was built for: a probe of the same object skips comparing settings
    # Its connections checked out at once: at most what its pool holds, so that the pool itself never waits.
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_CAPACITY))
    leases: int = 0
    retired: bool = False
    driver: "AnyDriver | None" = None  # how probes use the engine: made on its first lease, kept with it
    credentials: CredentialSource | None = None  # where its connections' credentials come from, if leased
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
    target may build an engine. Leases are taken on the event loop; retiring and disposing may come from any thread
    (a reload, the idle sweep): asyncio engines are then disposed on the loop.
    """

    def __init__(self, current: Callable[[str], Target | None] | None = None, max_threads: int = 8) -> None:
        self._cached: dict[str, _Cached] = {}
        self._retired: list[_Cached] = []
        self._lock = threading.Lock()
        self._current = current
        self.killer = Killer()  # sends the MySQL kills and PostgreSQL cancels of every engine here
        self._threads = Threads(max_threads)  # for blocking drivers only; none start unless one is probed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._disposing: set[Any] = set()
        # Runs of credentials commands by (target, module) and result: kept across reloads, as counters are.
        self.credential_fetches: dict[tuple[str, str], Counter[str]] = {}

    @contextmanager
    def lease(self, target: Target) -> Iterator[AnyDriver]:
        """The driver of ``target``'s engine, for one probe; one retired is disposed after its last (on the loop).

        A run queued under a config that a reload has replaced since gets the engine of the config served now:
        it must not build an engine for a removed target (nobody would dispose it), nor replace the new config's
        engine with one for its old settings. For a removed target it raises ConnectFailed.
        """
        self._loop = asyncio.get_running_loop()
        idle = None
        with self._lock:
            target = self._served_now(target)
            cached = self._cached.get(target.name)
            if cached is None or (cached.target is not target and cached.settings != _engine_settings(target)):
                # First probe, or a probe on a reloaded config that changed this target's connection.
                if cached is not None:
                    idle = self._retire(target.name)
                credentials = self._credential_source(target)
                cached = self._cached[target.name] = _Cached(_build(target, credentials), target)
                cached.credentials = credentials
            cached.leases += 1
        if idle is not None:
            self._dispose(idle.engine)
        try:
            if cached.driver is None:
                cached.driver = self._driver(cached)
            yield cached.driver
        finally:
            with self._lock:
                cached.leases -= 1
                cached.last_used = time.monotonic()
                done = cached.retired and cached.leases == 0
                if done:
                    self._retired.remove(cached)
            if done:
                self._dispose(cached.engine)

    def _driver(self, cached: _Cached) -> AnyDriver:
        """The driver of ``cached``'s engine: what it needs of the target (timeout, read_only, TLS) shapes the
        engine, so the target it was built for serves every probe that shares it."""
        engine = cached.engine
        if isinstance(engine, Engine):
            return BlockingDriver(engine, cached.slots, self._threads, cached.target)
        dialect = dialect_of(cached.target.url)
        assert dialect is not None  # asyncio engines are built only for these
        kill_args = _kill_args(engine, dialect, cached.target)
        return Driver(engine, dialect, cached.slots, cached.target, kill_args, cached.credentials)

    def _credential_source(self, target: Target) -> CredentialSource | None:
        """A new source of ``target``'s credentials, if it has a command; a module's command gets the address."""
        if target.credentials is None:
            return None
        address = None
        if target.module is not None:
            address = target.name.removeprefix(f"{target.module}/")
        owner = ("", target.module) if target.module is not None else (target.name, "")
        return CredentialSource(target.credentials, address, self.credential_fetches.setdefault(owner, Counter()))

    def credential_ages(self) -> dict[tuple[str, str], float]:
        """Seconds since the credentials in use were fetched, by (target, module): a module's oldest."""
        ages: dict[tuple[str, str], float] = {}
        with self._lock:
            sources = [(cached.target, cached.credentials) for cached in self._cached.values()]
        for target, source in sources:
            age = None if source is None else source.age()
            if age is not None:
                owner = ("", target.module) if target.module is not None else (target.name, "")
                ages[owner] = max(age, ages.get(owner, 0.0))
        return ages

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
                self._dispose(cached.engine)
        return stale

    def forget(self, names: list[str]) -> None:
        """Retire the engines of ``names`` (module targets let go); each is disposed once no probe uses it."""
        with self._lock:
            idle = [self._retire(name) for name in names if name in self._cached]
        for cached in idle:
            if cached is not None:
                self._dispose(cached.engine)

    def dispose_idle(self, idle_for: float) -> list[str]:
        """Dispose the engines no probe used for ``idle_for`` seconds; return their targets' names."""
        since = time.monotonic() - idle_for
        with self._lock:
            idle = [name for name, cached in self._cached.items() if cached.leases == 0 and cached.last_used < since]
            engines = [self._cached.pop(name).engine for name in idle]
        for engine in engines:
            self._dispose(engine)
        return idle

    def _retire(self, name: str) -> _Cached | None:
        """Forget ``name``'s engine; return it if no probe uses it (to dispose), else dispose at its last lease."""
        cached = self._cached.pop(name)
        if cached.leases == 0:
            return cached
        cached.retired = True
        self._retired.append(cached)
        return None

    def _dispose(self, engine: AsyncEngine | Engine) -> None:
        """Close ``engine``'s pooled connections: an asyncio engine's on the loop, from whatever thread asks."""
        if isinstance(engine, Engine):
            engine.dispose()
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # never leased on a loop: it never connected
        future = asyncio.run_coroutine_threadsafe(engine.dispose(), loop)
        self._disposing.add(future)
        future.add_done_callback(self._disposed)

    def _disposed(self, future: Any) -> None:
        self._disposing.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("closing an engine's connections failed: %s", type(future.exception()).__name__)

    def __len__(self) -> int:
        return len(self._cached)

    async def dispose_all(self) -> None:
        """Close every pooled connection and forget the engines (on the loop, at shut-down, after the kills)."""
        with self._lock:
            engines = [cached.engine for cached in [*self._cached.values(), *self._retired]]
            self._cached, self._retired = {}, []
        for engine in engines:
            if isinstance(engine, Engine):
                engine.dispose()
            else:
                await engine.dispose()
        self._threads.shutdown()


def _kill_args(engine: AsyncEngine, dialect: Dialect, target: Target) -> dict[str, Any]:
    """What a connection of its own (one that sends KILL QUERY) is made with: the engine's connect() arguments,
    and the time a stop may take."""
    return connect_arguments(engine.url, dialect, target)  # bounded by CANCEL_TIMEOUT where the stop is sent
