"""A target's driver handle on the event loop: connections checked out, statements run read-only, stops and stale
connections told apart. Every wait is an await: the probe's deadline ends it by cancelling the task that waits."""

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from app.config import Target
from app.config.statements import WriteRefused
from app.drivers.credentials import CredentialSource
from app.drivers.dialect import Arguments, Dialect, Fetched, Pipe
from app.drivers.kills import Identity

T = TypeVar("T")

# In a pooled connection's SQLAlchemy info dict: a probe has used it; the identity noted when it was made.
_USED = "sqlprobe_used"
_IDENTITY = "sqlprobe_identity"


class Stale(Exception):
    """A connection reused from the pool was dead before the statement reached the server: a new one may run it."""


class Unreadable(Exception):
    """The driver could not turn what the server sent into values (a cell it cannot decode): the connection is
    closed, as after a lost one, and the statement fails with this."""


@dataclass(slots=True)
class Session:
    """One connection, checked out for one run."""

    proxied: PoolProxiedConnection
    reused: bool  # it came from the pool: an earlier probe used it
    identity: (
        Identity | None
    )  # the server it reached and its id there (app/drivers/kills.py); None: it cannot be stopped
    checked_out: AsyncConnection | None = None  # SQLAlchemy's connection it was checked out through (asyncio)
    lost: bool = False  # closed by sqlprobe (lost, cut, unreadable): the pool must not get it back
    sent: bool = False  # something was sent on it during this checkout
    in_transaction: bool = False  # the read-only transaction is open
    restart: bool = False  # a statement failed in the read-only transaction: begin it again before the next

    @property
    def connection(self) -> Any:
        """The driver's own connection (aiomysql's, psycopg's AsyncConnection)."""
        return self.proxied.driver_connection

    @property
    def valid(self) -> bool:
        """False once the connection was lost, cut or discarded."""
        return not self.lost and self.proxied.is_valid and not getattr(self.connection, "closed", False)


class Driver:
    """One target's engine as probes use it: every statement read-only, every wait cancellable."""

    def __init__(
        self,
        engine: AsyncEngine,
        dialect: Dialect,
        slots: asyncio.Semaphore,
        target: Target,
        url_args: Mapping[str, Any],
        credentials: CredentialSource | None = None,
    ) -> None:
        self.engine = engine
        self._dialect = dialect
        self._target = target
        self._read_only = target.read_only
        self.sa_dialect = engine.sync_engine.dialect
        self.errors: tuple[type[Exception], ...] = (self.sa_dialect.loaded_dbapi.Error, Unreadable, WriteRefused)
        # The engine's connections checked out at once: at most what its pool holds, so that the pool never waits.
        self._slots = slots
        # What a connection of its own (a KILL QUERY's) is made with: the URL's arguments and the engine's.
        self._url_args = url_args
        self.credentials = credentials  # a credentials_command's, for each new connection
        # What a reused connection runs after its reset: the settings it was made with, and the begin.
        settings = "" if dialect.settings is None else dialect.settings(target)
        self._after_reset = ";".join(text for text in (settings, dialect.begin if self._read_only else "") if text)
        self._reset_answered = False  # the server has answered a reset: later ones go in the probe's write
        # Queries (their SQL) whose result, cut at its bound, ran on past what a pipe reads cheaply: each ends its
        # write from then on, so that the connection may be closed under the rest (app/drivers/mysql_pipeline.py).
        self.long_results: set[str] = set()

    async def checkout(self, deadline: float) -> Session:
        """A connection from the pool, or a new one set up; the driver's and SQLAlchemy's errors as is. Leased
        credentials are fetched first if they are due (by ``deadline``, time.monotonic(); CredentialsFailed)."""
        if self.credentials is not None:
            await self.credentials.get(deadline)
        async with _acquired_unless_failed(self._slots):
            # Through SQLAlchemy's AsyncConnection: the pool's checkout, check-in and invalidation then all run
            # where its asyncio adapters can await (a psycopg connection's close is a coroutine).
            checked_out = await self.engine.connect()
            proxied = None
            try:
                proxied = await checked_out.get_raw_connection()
                if _USED not in proxied.info and self._dialect.set_up is not None:
                    proxied.info[_IDENTITY] = await self._dialect.set_up(proxied.driver_connection, self._target)
            except BaseException:
                if proxied is not None:
                    self._dialect.close(proxied.driver_connection)
                await asyncio.shield(self._discard(checked_out, release_slot=False))
                raise
        reused = bool(proxied.info.get(_USED))
        proxied.info[_USED] = True
        return Session(proxied, reused, proxied.info.get(_IDENTITY), checked_out)

    async def execute(
        self,
        session: Session,
        sql: str,
        last: bool,
        arguments: Arguments | None = None,
        max_rows: int = sys.maxsize,
        timeout: float | None = None,
    ) -> Fetched:
        """Run a statement of queries.yml in the read-only transaction (if the target is read-only), for at most
        ``timeout`` seconds where the server enforces it.

        The transaction is begun before the first statement and ended after the ``last`` (where the dialect chains,
        in the same text as the statement, as is the next statement's own transaction begun). With ``arguments``,
        ``sql`` is in the driver's parameter style and the driver binds them. At most ``max_rows`` rows are read;
        when that many were, the rest was not, and the caller discards the session. Raises Stale when a reused
        connection proved dead before the statement could have run; the driver's errors otherwise (a lost
        connection is discarded first).
        """
        dialect = self._dialect
        if session.reused and not session.sent and dialect.reset is not None:
            # The first round trip on a reused connection resets it, and sets it up and begins the transaction again.
            await self._own(session, partial(dialect.reset, session.connection, self._after_reset))
            session.in_transaction = self._read_only
        elif self._read_only and (session.restart or not session.in_transaction):
            # The first round trip on a reused connection is sqlprobe's own: if the connection proves dead there,
            # nothing of the statement reached the server, and a new connection runs it.
            begin = dialect.restart if session.restart else dialect.begin
            await self._own(session, partial(dialect.command, session.connection, begin))
            session.in_transaction, session.restart = True, False
        elif session.reused and not session.sent:
            await self._own(session, partial(dialect.ping, session.connection))
        chained = self._read_only and dialect.chain
        after = (self._end(session) if last else dialect.begin) if chained else ""
        try:
            step = dialect.fetch(session.connection, sql, max_rows, arguments, after, self._read_only, timeout)
            fetched = await self._guarded(session, step)
        except self.errors:
            # Where the transaction stands is not known: the next statement begins a new one, or the release ends it.
            session.restart = self._read_only and session.in_transaction
            raise
        if chained and last:
            session.in_transaction = False
        return fetched

    @property
    def pipes(self) -> bool:
        """Whether a probe's statements go in one write (app/drivers/mysql_pipeline.py): read-only MySQL targets."""
        return self._read_only and self._dialect.chain and self._dialect.pipe is not None

    def prepare(self, session: Session, sql: str, arguments: Arguments | None, timeout: float | None) -> str:
        """A statement of queries.yml as the server gets it in a pipe (the driver's errors, WriteRefused)."""
        assert self._dialect.prepare is not None
        return self._dialect.prepare(session.connection, sql, arguments, self._read_only, timeout)

    async def pipe(self, session: Session, texts: Sequence[str], max_rows: Sequence[int]) -> Pipe:
        """Send prepared ``texts`` in one write, each in its read-only transaction, the last followed by the end;
        returns once sqlprobe's own first statements were answered (Stale as for execute)."""
        dialect = self._dialect
        assert dialect.pipe is not None
        reset = session.reused and not session.sent and dialect.reset is not None
        if reset and not self._reset_answered and dialect.reset is not None:
            # Until the target's server has answered a reset once, it goes in a write of its own (with the settings
            # and the begin): a server or proxy that refuses it would still run statements sent with it, in the
            # session it did not reset, and they would run again on the new connection the refusal leads to.
            await self._own(session, partial(dialect.reset, session.connection, self._after_reset))
            self._reset_answered = True
            session.in_transaction, session.restart, reset = self._read_only, False, False
        if reset:
            prelude = self._after_reset
        elif session.restart or not session.in_transaction:
            prelude = dialect.restart if session.restart else dialect.begin
        else:
            prelude = ""
        send = partial(dialect.pipe, session.connection, reset, prelude, texts, max_rows, dialect.begin)
        try:
            pipe = await self._own(session, lambda: send(self._end(session)))
        except self.errors:
            session.restart = session.in_transaction
            raise
        session.in_transaction, session.restart = True, False
        if pipe.reset_refused:
            self._reset_answered = False  # the next reset goes alone again, and a new connection follows its refusal
        return pipe

    async def next(self, session: Session, pipe: Pipe) -> Fetched:
        """The next statement's answer from ``pipe``; the driver's errors as for execute (a lost connection is
        discarded first). Once the pipe's last answer was read, the transaction is ended."""
        try:
            fetched = await self._guarded(session, pipe.next())
        except self.errors:
            session.restart = session.in_transaction
            raise
        finally:
            if pipe.ended and not pipe.failed:
                session.in_transaction = False
        return fetched

    async def ping(self, session: Session) -> None:
        """The cheapest round trip that proves the server answers (Stale as for execute)."""
        await self._own(session, partial(self._dialect.ping, session.connection))

    async def _own(self, session: Session, step: Callable[[], Awaitable[T]]) -> T:
        """One of sqlprobe's own round trips; Stale if it is the first on a reused connection and finds it dead."""
        first = not session.sent
        try:
            return await self._guarded(session, step())
        except self.errors as error:
            if first and session.reused and not session.valid:
                # The pool handed out a connection that had gone stale (server restarted, wait_timeout, session
                # killed): nothing of any statement reached the server.
                raise Stale from error
            raise

    async def _guarded(self, session: Session, step: Awaitable[T]) -> T:
        session.sent = True
        try:
            return await step
        except self.errors as error:
            if not session.valid or self.sa_dialect.is_disconnect(error, session.connection, None):  # type: ignore[arg-type]
                self._lose(session)  # lost or killed: never back to the pool
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError) as error:
            # A value the driver could not convert (a cell in a charset it cannot decode, say): the rest of the
            # result is unread, so the connection is out of step.
            self._lose(session)
            told = f"{type(error).__name__}: {_told(error)}"
            raise Unreadable(f"the driver could not read the result ({told})") from error

    async def end(self, session: Session) -> None:
        """End the read-only transaction still open on ``session``; the driver's errors as is."""
        if session.in_transaction:
            await self._guarded(session, self._dialect.command(session.connection, self._end(session)))
        session.in_transaction = False

    def _end(self, session: Session) -> str:
        end_for = self._dialect.end_for
        return self._dialect.end if end_for is None else end_for(session.connection)

    def sever(self, session: Session) -> None:
        """Close ``session``'s connection at once, under whatever waits on it (a statement given up on)."""
        self._lose(session)

    def _lose(self, session: Session) -> None:
        """Close ``session``'s connection at once (its socket with it); the release tells the pool.

        Once only: a sever that comes after the release began finds the connection closed, and the pool may have
        let go of it already (SQLAlchemy's driver_connection is then None).
        """
        if session.lost:
            return
        session.lost = True
        self._dialect.close(session.connection)

    async def release(self, session: Session, discard: bool = False) -> None:
        """Give the connection back to the pool, or close it for good (always, if a transaction is still open).

        Shielded: a run cancelled meanwhile (its probes gave up) still leaves the pool's count right.
        """
        if discard or session.in_transaction or not session.valid:
            self._lose(session)  # at once, whatever comes next
            await asyncio.shield(self._discard(session.checked_out, release_slot=True))
        else:
            await asyncio.shield(self._check_in(session))

    async def _check_in(self, session: Session) -> None:
        try:
            if session.checked_out is not None:
                await session.checked_out.close()
        finally:
            self._slots.release()

    async def _discard(self, checked_out: AsyncConnection | None, release_slot: bool) -> None:
        """Tell the pool a connection (closed by sqlprobe already) is gone for good."""
        try:
            if checked_out is not None:
                with contextlib.suppress(Exception):  # the driver's complaint about a connection closed under it
                    await checked_out.invalidate()
                await checked_out.close()
        finally:
            if release_slot:
                self._slots.release()

    def stopper(self, session: Session) -> Callable[[], Awaitable[None]]:
        """How to stop the statement running on ``session`` from outside it (KILL QUERY, a cancel request)."""
        url_args = self._url_args
        if self.credentials is not None:
            url_args = {**url_args, **self.credentials.arguments()}
        return partial(self._dialect.stop, session.connection, url_args, session.identity)


def _told(error: Exception) -> str:
    """What an error in reading a result says; a codec's message quotes the bytes it failed on (the data's, which
    are not for the debug page or the log), so only the codec and its complaint are told."""
    if isinstance(error, UnicodeError):
        return f"the {getattr(error, 'encoding', '?')!r} codec failed: {getattr(error, 'reason', 'invalid text')}"
    return str(error)


class _acquired_unless_failed:
    """``semaphore`` acquired for the block, and released only if the block fails (the session then holds it)."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self._semaphore.release()
