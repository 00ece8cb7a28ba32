"""A target's driver handle: connections checked out within a deadline, statements bounded by it and kept read-only,
and the ways to stop a statement from another thread."""

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from app.engines import (
    MIN_WAIT,
    Fetched,
    Interrupt,
    checkout_deadline,
    dialect_of,
    fetch_bound,
    fetch_with_cursor,
    interrupter_for,
    one_by_one,
)
from app.errors import ConnectFailed

T = TypeVar("T")

# Marks a pooled DBAPI connection (in its SQLAlchemy info dict) once a probe has used it.
_USED = "sqlprobe_used"


Arguments = Sequence[Any] | Mapping[str, Any]


class TransactionEnded(Exception):
    """The statement ended the read-only transaction it ran in (and returned rows): its connection is closed."""


class Stale(Exception):
    """A connection reused from the pool was dead before the statement reached the server: a new one may run it."""


@dataclass(slots=True)
class Session:
    """One connection, checked out for one run."""

    proxied: PoolProxiedConnection
    reused: bool  # it came from the pool: an earlier probe used it
    sent: bool = False  # something was sent on it during this checkout
    in_transaction: bool = False  # the read-only transaction is open
    restart: bool = False  # a statement failed in the read-only transaction: reopen it before the next

    @property
    def dbapi(self) -> Any:
        """The driver's own connection."""
        return self.proxied.dbapi_connection

    @property
    def valid(self) -> bool:
        """False once the connection was lost or discarded."""
        return self.proxied.is_valid


class Driver:
    """One target's engine as probes use it: every wait within the probe's deadline, every statement read-only."""

    def __init__(self, engine: Engine, slots: threading.BoundedSemaphore, read_only: bool) -> None:
        self.engine = engine
        self._dialect = dialect_of(engine.url)
        self._read_only = read_only and self._dialect is not None
        self.errors: type[Exception] = engine.dialect.loaded_dbapi.Error
        # The engine's connections checked out, waited for with the time left: SQLAlchemy's pool takes no per-call
        # wait (its own is the target's timeout, and never reached while these are held).
        self._slots = slots

    def checkout(self, deadline: float) -> Session:
        """A connection from the pool, or a new one, by ``deadline``; the driver's and SQLAlchemy's errors as is."""
        if not self._slots.acquire(timeout=max(MIN_WAIT, deadline - time.monotonic())):
            raise ConnectFailed("no free connection in the target's pool (too many probes of it at once)")
        try:
            with checkout_deadline(deadline):
                # The pooled DBAPI connection itself: SQLAlchemy's Connection and result objects cost as much CPU
                # as the driver's own work for these small queries, and probes need none of what they add.
                proxied = self.engine.raw_connection()
        except BaseException:
            self._slots.release()
            raise
        reused = bool(proxied.info.get(_USED))
        proxied.info[_USED] = True
        return Session(proxied, reused)

    def execute(
        self, session: Session, sql: str, last: bool, arguments: Arguments | None = None, max_rows: int = sys.maxsize
    ) -> Fetched:
        """Run a statement of queries.yml (bounded first: see bound), in the read-only transaction if the target is.

        The transaction is opened with the first statement and closed with the ``last``, in the same round trip where
        the protocol allows. With ``arguments``, ``sql`` is in the driver's parameter style and the driver binds them.
        At most ``max_rows`` rows are read; when that many were, the rest was not, and the caller discards the session.
        Raises Stale when a reused connection proved dead before the statement could have run;
        the driver's errors otherwise (a lost connection is discarded first).
        """
        dialect = self._dialect
        if dialect is None:
            return self._guarded(session, lambda: fetch_with_cursor(session.dbapi, sql, max_rows, arguments))
        if arguments is not None and dialect.render is not None:  # bound as the driver would: sent as any other
            sql, arguments = dialect.render(session.dbapi, sql, arguments), None
        if arguments is None:
            fetch = partial(_fetch_within, dialect.fetch, max_rows)
        else:  # bound by the driver, with its own cursor: no round trip shared
            fetch = partial(one_by_one, partial(fetch_bound, arguments=arguments, max_rows=max_rows), dialect.command)
        before = after = ""
        if self._read_only:
            if session.restart or not session.in_transaction:
                before = dialect.restart if session.restart else dialect.begin
            if last:
                after = dialect.end
        try:
            fetched = self._guarded(session, lambda: fetch(session.dbapi, sql, before, after))
        except self.errors:
            # Where the transaction stands is not known: the next statement opens a new one, or the release ends it.
            session.in_transaction = session.restart = self._read_only
            raise
        session.in_transaction, session.restart = self._read_only and not last, False
        still_open = dialect.transaction_open
        if session.in_transaction and still_open is not None and not still_open(session.dbapi):
            # An implicit commit: later statements would run outside it. The connection is closed, they get a new one.
            session.in_transaction = False
            raise TransactionEnded
        return fetched

    def ping(self, session: Session) -> None:
        """The cheapest round trip that proves the server answers (bounded first; Stale as for execute)."""
        self._guarded(session, lambda: self.engine.dialect.do_ping(session.dbapi))

    def _guarded(self, session: Session, call: Callable[[], T]) -> T:
        first = not session.sent
        session.sent = True
        closed_by_server = None if self._dialect is None else self._dialect.closed_by_server
        if first and session.reused and closed_by_server is not None:
            if closed_by_server(session.dbapi):
                session.proxied.invalidate()
                raise Stale  # known without sending anything
            first = False  # so a connection lost from here on may have run the statement: it is not sent again
        try:
            result: T = call()
        except self.errors as error:
            if self.engine.dialect.is_disconnect(error, session.dbapi, None):  # type: ignore[arg-type]
                session.proxied.invalidate(error)  # lost or killed: never back to the pool
                if first and session.reused:
                    # The pool handed out a connection that had gone stale (server restarted, wait_timeout,
                    # session killed): nothing of the statement reached the server, or it is the first round trip.
                    raise Stale from error
            raise
        return result

    def end(self, session: Session) -> None:
        """Close the read-only transaction still open on ``session`` (bounded first); the driver's errors as is."""
        if self._dialect is not None and session.in_transaction:
            self._dialect.command(session.dbapi, self._dialect.end)
        session.in_transaction = False

    def release(self, session: Session, discard: bool = False) -> None:
        """Give the connection back to the pool, or close it for good (always, if a transaction is still open)."""
        try:
            if (discard or session.in_transaction) and session.valid:
                session.proxied.invalidate()
            session.proxied.close()
        finally:
            self._slots.release()

    def interrupter(self, session: Session) -> Interrupt | None:
        """How to stop the statement running on ``session`` from another thread (KILL QUERY, a cancel request)."""
        return interrupter_for(self.engine, session.dbapi)

    def bound(self, session: Session, deadline: float) -> None:
        """The statement about to run on ``session``, or running on it, gives up by ``deadline`` (and the grace)."""
        if self._dialect is not None:
            self._dialect.bound_statement(session.dbapi, deadline)

    def sever(self, session: Session) -> None:
        """Cut ``session``'s socket: a statement waiting on a silent peer fails at once (from another thread)."""
        if self._dialect is not None:
            self._dialect.sever(session.dbapi)


def _fetch_within(
    fetch: Callable[[Any, str, str, str, int], Fetched], max_rows: int, dbapi: Any, sql: str, before: str, after: str
) -> Fetched:
    return fetch(dbapi, sql, before, after, max_rows)
