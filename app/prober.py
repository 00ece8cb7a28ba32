"""Probe one target: run its queries within a deadline, sharing a run between probes that arrive together. No HTTP."""

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.config import Query, Target
from app.driver import Driver, Session, Stale, TransactionEnded
from app.engines import DEADLINE_GRACE, EngineCache, Fetched, Interrupt
from app.errors import ConnectFailed, DeadlineExceeded, ProbeError, QueryFailed, where_it_failed
from app.parameters import ParameterSets, bind
from app.results import ProbeResult, QueryResult, failed_query
from app.samples import metric_result
from app.workers import Workers

log = logging.getLogger(__name__)

# Where a refused login or privilege is explained: the user to create and what to grant it.
GRANTS_DOC = "docs/quickstart-mysql.md"

T = TypeVar("T")

# Seconds after a run was given up (and its statement stopped) before a connection still waiting is cut.
SEVER_AFTER = DEADLINE_GRACE / 2

# Results of queries whose metrics set min_interval, by (target name, SQL, parameters): the target and the result.
ResultCache = dict[tuple[str, str, ParameterSets], tuple[Target, QueryResult]]


@dataclass(slots=True)
class _Flight:
    """One run of a target's queries, and the probes waiting for it."""

    run: "_Run"
    waiters: list["asyncio.Future[None]"] = field(default_factory=list)
    landed: bool = False  # the run is over and its waiters were woken

    def land(self) -> None:
        """Wake every probe still waiting for this run (on the event loop, once the run is over)."""
        self.landed = True
        for waiter in self.waiters:
            _wake(waiter)


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


class Prober:
    """Runs probes on a bounded pool of threads so the event loop never blocks on a database."""

    def __init__(self, engines: EngineCache, max_workers: int) -> None:
        self._engines = engines
        self._workers = Workers(max_workers, "sqlprobe-db")
        self._cancellers = ThreadPoolExecutor(4, thread_name_prefix="sqlprobe-cancel")
        self._flights: dict[tuple[str, frozenset[str] | None], _Flight] = {}
        self._cache: ResultCache = {}

    async def probe(self, target: Target, query_sets: frozenset[str] | None, budget: float) -> ProbeResult:
        """Probe ``target``; the answer is back within ``budget`` seconds whatever the server does.

        Probes of the same target and query sets that arrive while one runs (two Prometheus servers
        scraping it) wait for that run instead of starting their own: each gets what finished by its own
        deadline, and the run goes on until the last of them has given up.
        """
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        deadline = started + budget
        key = (target.name, query_sets)
        flight = self._flights.get(key)
        if flight is None or flight.run.target is not target or flight.landed or flight.run.abandoned:
            run = _Run(target, target.queries_for(query_sets), self._engines, self._cache, deadline)
            flight = self._flights[key] = _Flight(run)
            self._workers.submit(run.execute, loop, flight.land)
        else:
            flight.run.extend(deadline)
        waiter = loop.create_future()
        flight.waiters.append(waiter)
        timer = loop.call_later(budget, _wake, waiter)
        try:
            await waiter  # woken when the run lands or when the budget is spent, whichever comes first
        finally:
            timer.cancel()
            flight.waiters.remove(waiter)
            if not flight.landed and not flight.waiters:
                # Every probe waiting for the run gave up (deadlines, clients gone): stop it, on the server too.
                self._stop(loop, flight.run)
            if (flight.landed or flight.run.abandoned) and self._flights.get(key) is flight:
                del self._flights[key]
        return flight.run.result(budget, time.monotonic() - started)

    def _stop(self, loop: asyncio.AbstractEventLoop, run: "_Run") -> None:
        interrupt, running = run.abandon()
        if interrupt is not None:
            self._cancellers.submit(interrupt)
        if running is not None:
            # If the statement's answer does not come soon after (a peer gone silent), its socket is cut.
            loop.call_later(SEVER_AFTER, run.sever, running)

    def forget_results(self) -> None:
        """Drop the results kept for min_interval (after a reload: they belong to the old config)."""
        self._cache.clear()

    def forget_targets(self, names: list[str]) -> None:
        """Drop the results kept for the targets named (module targets let go)."""
        gone = set(names)
        for key in [key for key in list(self._cache) if key[0] in gone]:  # list(): atomic against workers
            self._cache.pop(key, None)

    def close(self) -> None:
        """Stop accepting probes; running ones end by their own deadlines."""
        self._workers.close()
        self._cancellers.shutdown(wait=False, cancel_futures=True)


# The statement running when a run was given up: when it started, and the connection it runs on.
_Running = tuple[float, Session]


class _Run:
    """One run's blocking work, shared between its worker thread and the coroutines waiting for it."""

    def __init__(
        self, target: Target, queries: tuple[Query, ...], engines: EngineCache, cache: ResultCache, deadline: float
    ) -> None:
        self.target = target
        self._queries = queries
        self._engines = engines
        self._cache = cache
        self._deadline = deadline  # the latest of its probes' deadlines
        self._lock = threading.Lock()
        self._finished: list[QueryResult] = []
        self._abandoned = False
        self._driver: Driver | None = None
        self._connection: Session | None = None  # the worker's connection now
        self._running: _Running | None = None

    def execute(self) -> None:
        """Run every query, in order, on as few connections as possible; called in a worker thread, never raises."""
        try:
            with self._engines.lease(self.target) as (engine, slots):
                self._driver = Driver(engine, slots, self.target.read_only)
                self._execute(self._driver)
        except ProbeError as error:
            self._fail_rest(error)
        except _Abandoned:
            return
        except Exception as error:  # noqa: BLE001 - a bug must cost one probe, not the scrape or the worker
            # Its message too, scrubbed: a driver's own check at connect (a TLS file gone since the config was
            # loaded, say) says what is wrong only there.
            message = f"{type(error).__name__}: {_scrub(_unexpected_message(error), self.target)}"
            log.error(
                "probe of target %s failed unexpectedly: %s (%s)", self.target.name, message, where_it_failed(error)
            )
            self._fail_rest(ProbeError(f"unexpected error: {message}; see sqlprobe's log"))

    def _execute(self, driver: Driver) -> None:
        ran = False  # a statement of this run reached the server
        try:
            for query in self._queries:
                cached = self._cached(query)
                if cached is not None:
                    if not self._finish(cached):
                        return
                    continue
                result = self._run_query(driver, query)
                ran = True
                if not self._finish(result):
                    return  # its statement may have been killed half-way: the connection is discarded below
                if query.min_interval is not None and result.success:
                    self._cache[self.target.name, query.sql, query.parameters] = (
                        self.target,
                        result,
                    )  # never a failure
            if not ran and self._queries:
                # Every result was kept from an earlier probe: still, the server must answer in this one.
                self._ping(driver)
        finally:
            self._release(driver, discard=self._abandoned)

    def _session(self, driver: Driver) -> Session:
        """The run's connection: checked out when first needed, and again after one was lost or discarded."""
        if self._connection is not None and not self._connection.valid:
            self._release(driver, discard=True)
        if self._connection is None:
            self._connection = self._checkout(driver)
        return self._connection

    def _release(self, driver: Driver, discard: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if not discard and connection.valid and connection.in_transaction:
            try:
                self._tracked(driver, connection, lambda: driver.end(connection))
            except (driver.errors, _Abandoned):
                discard = True
        driver.release(connection, discard)

    def _tracked(self, driver: Driver, session: Session, step: Callable[[], T], started: float | None = None) -> T:
        """``step`` on ``session`` as the run's running statement: bounded by the deadline, stopped when given up."""
        with self._lock:
            if self._abandoned:
                raise _Abandoned
            self._running = (time.monotonic() if started is None else started, session)
            driver.bound(session, self._deadline)  # under the lock, as extend() moves the deadline
        try:
            return step()
        finally:
            with self._lock:
                self._running = None  # before the connection may be closed: see sever()

    def _on_fresh_if_stale(self, driver: Driver, step: Callable[[Session], T]) -> T:
        """``step`` on the run's connection, or on new ones while the pool hands out stale ones."""
        while True:
            try:
                return step(self._session(driver))
            except Stale:
                # Nothing reached the server: a new connection answers for it. If that fails too, the connect
                # error (server down, password changed) is what the operator can act on, for every query.
                self._release(driver, discard=True)

    def _ping(self, driver: Driver) -> None:
        failure: ProbeError
        try:
            self._on_fresh_if_stale(
                driver, lambda session: self._tracked(driver, session, lambda: driver.ping(session))
            )
            return
        except driver.errors as error:
            failure = ConnectFailed(f"the server did not answer a ping: {_scrub(str(error), self.target)}")
        except ConnectFailed as error:
            failure = error
        with self._lock:
            if not self._abandoned:  # the kept results are not served: the server did not answer this probe
                self._finished = [failed_query(query, failure) for query in self._queries]

    def _finish(self, result: QueryResult) -> bool:
        """Record a query's result; False if the probe was given up meanwhile (the result is dropped)."""
        with self._lock:
            self._running = None
            if self._abandoned:
                return False
            self._finished.append(result)
            return True

    def _cached(self, query: Query) -> QueryResult | None:
        """A successful result of ``query`` younger than its min_interval, for the metrics it feeds now."""
        if query.min_interval is None:
            return None
        target, result = self._cache.get((self.target.name, query.sql, query.parameters), (None, None))
        if target is not self.target or result is None or time.monotonic() - result.ran_at >= query.min_interval:
            return None
        by_key = {metric_result.metric.key: metric_result for metric_result in result.metrics}
        if any(metric.key not in by_key for metric in query.metrics):
            return None  # it ran for other query sets than this probe's
        metrics = tuple(by_key[metric.key] for metric in query.metrics)
        return result._replace(query=query, metrics=metrics, from_cache=True)

    def _checkout(self, driver: Driver) -> Session:
        if self._abandoned:
            raise _Abandoned
        try:
            return driver.checkout(self._deadline)
        except driver.errors as error:  # raw_connection() leaves the driver's errors as they are
            failure = ConnectFailed(_scrub(str(error), self.target))
            _let_go(error)
        except PoolTimeoutError:
            failure = ConnectFailed("no free connection in the target's pool (too many probes of it at once)")
        except SQLAlchemyError as error:
            failure = ConnectFailed(_scrub(str(error), self.target))
            _let_go(error)
        raise failure  # out here, with no link to the driver's error: the probe's result keeps it

    def _run_query(self, driver: Driver, query: Query) -> QueryResult:
        started = time.monotonic()

        def execute(session: Session) -> Fetched:
            last = query is self._queries[-1]
            if not query.parameters:  # the SQL as written: % and :name need no escaping
                step = partial(driver.execute, session, query.sql, last, max_rows=query.row_limit)
                return self._tracked(driver, session, step, started)
            # The union of its runs, one per parameter set.
            columns: tuple[str, ...] = ()
            rows: list[Sequence[Any]] = []
            for number, parameter_set in enumerate(query.parameters, start=1):
                statement, arguments = bind(driver.engine.dialect, query.sql, parameter_set)
                ends = last and number == len(query.parameters)
                step = partial(driver.execute, session, statement, ends, arguments, query.row_limit - len(rows))
                fetched = self._tracked(driver, session, step, started)
                if fetched is None:
                    return None
                columns = fetched[0]
                rows.extend(fetched[1])
                if len(rows) >= query.row_limit:
                    break  # the union is cut there, as one result would be
            return columns, rows

        try:
            fetched = self._on_fresh_if_stale(driver, execute)
        except driver.errors as error:
            failure = QueryFailed(_scrub(str(error), self.target))
            return failed_query(query, failure, time.monotonic() - started)
        except TransactionEnded:
            self._release(driver, discard=True)
            failure = QueryFailed("the statement ended the read-only transaction (its connection was closed)")
            return failed_query(query, failure, time.monotonic() - started)
        if fetched is None:
            # A statement without a result set (SET, USE, COMMIT...) may have changed the session: it is not what
            # sqlprobe made it any more, so it is closed, and the next query gets a new connection.
            self._release(driver, discard=True)
            failure = QueryFailed("the statement returned no result set (its connection was closed)")
            return failed_query(query, failure, time.monotonic() - started)
        if len(fetched[1]) >= query.row_limit:
            # Cut there: the rest of the result was not read, so the connection is out of step (or closed already).
            self._release(driver, discard=True)
        duration = time.monotonic() - started
        columns, rows = fetched
        metrics = tuple(metric_result(metric, columns, rows) for metric in query.metrics)
        return QueryResult(query, duration, len(rows), None, metrics, ran_at=started)

    def _fail_rest(self, error: ProbeError) -> None:
        """Every query that has no result yet fails with ``error`` (unless the probe was given up)."""
        with self._lock:
            self._running = None
            if not self._abandoned:
                self._finished.extend(failed_query(query, error) for query in self._queries[len(self._finished) :])

    @property
    def abandoned(self) -> bool:
        """True once the probes gave up on this run."""
        return self._abandoned

    def extend(self, deadline: float) -> None:
        """A probe with ``deadline`` joined the run: its work, and the statement running, may go on until then."""
        with self._lock:
            if deadline <= self._deadline:
                return
            self._deadline = deadline
            if self._running is not None and self._driver is not None:
                self._driver.bound(self._running[1], deadline)

    def abandon(self) -> tuple[Interrupt | None, _Running | None]:
        """Mark the run as given up; how to stop the statement still running, if any, and which it is."""
        with self._lock:
            self._abandoned = True
            running = self._running
            if running is None or self._driver is None:
                return None, None
            # Made only now: few statements ever need stopping.
            return self._driver.interrupter(running[1]), running

    def sever(self, running: _Running) -> None:
        """Cut the connection of a statement given up on if it still runs (its server's answer never came)."""
        with self._lock:
            # Under the lock: the worker closes a connection only after its statement is done with (_finish).
            if self._running is running and self._driver is not None:
                self._driver.sever(running[1])

    def result(self, budget: float, duration: float) -> ProbeResult:
        """What finished so far; queries that did not finish fail with the deadline."""
        with self._lock:
            finished = list(self._finished)
            running = self._running
        unfinished = self._queries[len(finished) :]
        if unfinished:
            error = DeadlineExceeded(budget)
            in_flight = time.monotonic() - running[0] if running is not None else 0.0
            finished.append(failed_query(unfinished[0], error, in_flight))
            finished.extend(failed_query(query, error) for query in unfinished[1:])
        return ProbeResult(self.target, budget, duration, tuple(finished), at=time.monotonic())


class _Abandoned(Exception):
    """Raised inside the worker when the probe was given up before the next statement."""


def _let_go(error: BaseException | None) -> None:
    """Free now what the frames of ``error`` (and of the errors it came from) hold, not at a garbage collection.

    A failed psycopg connect leaves its half-open connection, socket and all, in a frame of its traceback, in a
    reference cycle: each probe of a silent PostgreSQL host would leave one more TCP connection open for a while.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)  # skips the frames still running (this one's callers)
        error = error.__cause__ or error.__context__


def _unexpected_message(error: Exception) -> str:
    """An unexpected error's text; a codec's names the character it met and where, and that text may be a password
    (PyMySQL sends it as Latin-1), so only the codec and its complaint are told."""
    if isinstance(error, UnicodeError):
        encoding, reason = getattr(error, "encoding", "?"), getattr(error, "reason", "invalid text")
        return f"the {encoding!r} codec failed on a setting of the target (its DSN, user or password): {reason}"
    return str(error)


def _scrub(message: str, target: Target) -> str:
    """Driver messages never hold the password (as written or URL-escaped); this makes sure of it.

    A refused login or missing privilege also says where the grants sqlprobe needs are documented.
    """
    password = target.url.password
    if password:
        for form in {password, quote(password, safe=""), quote_plus(password)}:
            message = message.replace(form, "***")
    if "Access denied" in message or "command denied" in message:
        message += f" (the exporter user and its grants: {GRANTS_DOC})"
    return message
