"""Targets whose driver blocks (SQLite, the demo target; any SQLAlchemy driver without asyncio): their work runs on a
small bounded pool of threads of their own, which MySQL and PostgreSQL probes never wait for."""

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from app.config import Target
from app.config.statements import WriteRefused, refuse_unless_read
from app.drivers.dialect import Arguments, Fetched
from app.drivers.driver import Session, Unreadable

T = TypeVar("T")

log = logging.getLogger(__name__)

# Threads for blocking drivers (--max-threads): SQLite answers in microseconds, so a few are plenty.
DEFAULT_MAX_THREADS = 8


def fetch_with_cursor(
    dbapi_connection: Any,
    sql: str,
    max_rows: int = sys.maxsize,
    parameters: Sequence[Any] | Mapping[str, Any] | None = None,
) -> Fetched:
    """Run ``sql`` on a DBAPI cursor; its column names and at most ``max_rows`` rows, or None if no result set.

    Without ``parameters`` the driver sends the SQL as written; with them, ``sql`` is in the driver's parameter
    style and the driver binds them. When ``max_rows`` rows were read the rest is left unread: the caller discards
    the connection.
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


class Threads:
    """At most ``count`` threads, each with a queue of its own, started when first needed: a session's calls all go
    to one (SQLite's connections belong to the thread that made them), the one with the fewest sessions open, so a
    statement that waits (a locked database) holds its thread and no share of the other probes."""

    def __init__(self, count: int) -> None:
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"sqlprobe-blocking-{n}") for n in range(count)]
        self._sessions = dict.fromkeys(self._threads, 0)  # sessions open on each thread (changed on the loop only)

    def pick(self) -> ThreadPoolExecutor:
        """The thread a new session's calls go to (counted until ``done``)."""
        thread = min(self._threads, key=self._sessions.__getitem__)  # the first of the least used: ties in order
        self._sessions[thread] += 1
        return thread

    def done(self, thread: ThreadPoolExecutor) -> None:
        """A session picked on ``thread`` is over (its connection given back there)."""
        self._sessions[thread] -= 1

    def shutdown(self) -> None:
        """Let every thread end after its current call."""
        for thread in self._threads:
            thread.shutdown(wait=False, cancel_futures=True)


class BlockingDriver:
    """A blocking engine behind the same calls as app/drivers/driver.py's Driver, a session's calls on one thread of
    ``threads``.

    A probe given up stops waiting at once; its thread goes on until the driver returns (SQLite's is interrupted),
    and the connection is given back only then, on that thread.
    """

    def __init__(self, engine: Engine, slots: asyncio.Semaphore, threads: Threads, target: Target) -> None:
        self.engine = engine
        self.sa_dialect = engine.dialect
        self.errors: tuple[type[Exception], ...] = (engine.dialect.loaded_dbapi.Error, Unreadable, WriteRefused)
        # The driver binds the arguments apart from the text: the text sent is the statement as written.
        self._syntax = target.syntax if target.read_only else None
        self._slots = slots
        self._threads = threads
        self._thread: dict[int, ThreadPoolExecutor] = {}  # by id() of a session: the thread its calls run on

    async def _on_thread(self, session: Session, call: Callable[[], T]) -> T:
        # Shielded: a probe given up stops waiting, and the call still ends on its thread before the release.
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._thread[id(session)], call))

    async def checkout(self, deadline: float) -> Session:
        """A connection from the pool, or a new one (``deadline`` is the probe's: the thread's call ends by it)."""
        await self._slots.acquire()
        thread = self._threads.pick()
        future = asyncio.get_running_loop().run_in_executor(thread, self.engine.raw_connection)
        try:
            proxied = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(partial(self._connected_too_late, thread))
            raise
        except BaseException:
            self._free(thread)
            raise
        session = Session(proxied, reused=False, identity=None)
        self._thread[id(session)] = thread
        return session

    def _connected_too_late(self, thread: ThreadPoolExecutor, future: "asyncio.Future[Any]") -> None:
        """A checkout given up on while its thread connected: the connection goes back to the pool, on that thread."""
        if future.cancelled() or future.exception() is not None:
            self._free(thread)
            return
        self._give_back(thread, future.result(), discard=False)

    async def execute(
        self,
        session: Session,
        sql: str,
        last: bool = False,
        arguments: Arguments | None = None,
        max_rows: int = sys.maxsize,
        timeout: float | None = None,
    ) -> Fetched:
        """Run a statement (at most ``max_rows`` rows read); the driver's errors as is. On a read-only target, one
        that does not only read is refused (WriteRefused), as no read-only transaction holds it here. A ``timeout``
        is not the server's to enforce here (SQLite has none): the run's own stop is all."""
        if self._syntax is not None:
            refuse_unless_read(sql, self._syntax)
        session.sent = True
        try:
            return await self._on_thread(
                session, partial(fetch_with_cursor, session.connection, sql, max_rows, arguments)
            )
        except self.errors as error:
            if self.sa_dialect.is_disconnect(error, session.connection, None):  # type: ignore[arg-type]
                session.proxied.invalidate(error)
            raise

    async def ping(self, session: Session) -> None:
        """A round trip (``select 1``)."""
        await self.execute(session, "select 1", last=True)

    async def end(self, session: Session) -> None:
        """Nothing to end: blocking targets run without sqlprobe's read-only transaction."""

    async def release(self, session: Session, discard: bool = False) -> None:
        """Give the connection back (or close it), on its thread, after what that thread still does with it; the
        run ends once it is back, so that the next probe's session finds the thread free again."""
        given_back = self._give_back(self._thread.pop(id(session)), session.proxied, discard)
        if given_back is not None:
            await asyncio.shield(given_back)

    def _give_back(self, thread: ThreadPoolExecutor, proxied: Any, discard: bool) -> "asyncio.Future[None] | None":
        def give_back() -> None:
            if discard and proxied.is_valid:
                proxied.invalidate()
            proxied.close()

        try:
            given_back = asyncio.wrap_future(thread.submit(give_back))  # queued behind any call still running on it
        except RuntimeError:  # shut down: the process is ending
            self._free(thread)
            return None
        # On the loop (asyncio's semaphore is not thread-safe), before whoever awaits the release goes on.
        given_back.add_done_callback(partial(self._given_back, thread))
        return given_back

    def _given_back(self, thread: ThreadPoolExecutor, given_back: "asyncio.Future[None]") -> None:
        self._free(thread)
        if not given_back.cancelled() and (error := given_back.exception()) is not None:
            log.warning("giving a connection back to its pool failed: %s", type(error).__name__)

    def _free(self, thread: ThreadPoolExecutor) -> None:
        """A session (or a checkout given up) on ``thread`` is over: its slot and its place on the thread are free."""
        self._threads.done(thread)
        self._slots.release()

    def sever(self, session: Session) -> None:
        """Nothing to cut from outside: the driver's thread ends with its statement (SQLite's is interrupted)."""

    def stopper(self, session: Session) -> Callable[[], Awaitable[None]] | None:
        """SQLite's interrupt(), for the statement running on ``session``; None for other blocking drivers."""
        interrupt = getattr(session.connection, "interrupt", None)
        if interrupt is None:
            return None

        async def stop() -> None:
            interrupt()

        return stop
