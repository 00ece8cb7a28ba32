"""Probe one target: run its queries within a deadline, sharing a run between probes that arrive together. No HTTP."""

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Dialect, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import PoolProxiedConnection

from app.config import Query, Target
from app.engines import (
    EngineCache,
    Fetch,
    Fetched,
    Interrupt,
    checkout_deadline,
    fetch_with_cursor,
    fetcher_for,
    interrupter_for,
)
from app.errors import ConnectFailed, DeadlineExceeded, ProbeError, QueryFailed, where_it_failed
from app.parameters import ParameterSets, bind
from app.results import ProbeResult, QueryResult, failed_query
from app.samples import metric_result
from app.workers import Workers

log = logging.getLogger(__name__)

# Results of queries whose metrics set min_interval, by (target name, SQL, parameters): the target and the result.
ResultCache = dict[tuple[str, str, ParameterSets], tuple[Target, QueryResult]]


@dataclass(slots=True)
class _Flight:
    """One run of a target's queries, and the probes waiting for it."""

    run: "_Run"
    deadline: float
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
        scraping it) wait for that run instead of starting their own.
        """
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        key = (target.name, query_sets)
        flight = self._flights.get(key)
        if flight is None or flight.run.target is not target or flight.landed:
            run = _Run(target, target.queries_for(query_sets), self._engines, self._cache, started + budget)
            flight = self._flights[key] = _Flight(run, started + budget)
            self._workers.submit(run.execute, loop, flight.land)
        waiter = loop.create_future()
        flight.waiters.append(waiter)
        timer = loop.call_later(budget, _wake, waiter)
        try:
            await waiter  # woken when the run lands or when the budget is spent, whichever comes first
        finally:
            timer.cancel()
            flight.waiters.remove(waiter)
            if not flight.landed and (not flight.waiters or time.monotonic() >= flight.deadline):
                # Past the run's deadline, or every client went away: stop the work, on the server too.
                interrupt = flight.run.abandon()
                if interrupt is not None:
                    self._cancellers.submit(interrupt)
            if (flight.landed or flight.run.abandoned) and self._flights.get(key) is flight:
                del self._flights[key]
        return flight.run.result(budget, time.monotonic() - started)

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


class _Run:
    """One probe's blocking work, shared between its worker thread and the waiting coroutine."""

    def __init__(
        self, target: Target, queries: tuple[Query, ...], engines: EngineCache, cache: ResultCache, deadline: float
    ) -> None:
        self.target = target
        self._queries = queries
        self._engines = engines
        self._cache = cache
        self._deadline = deadline
        self._lock = threading.Lock()
        self._finished: list[QueryResult] = []
        self._abandoned = False
        # The statement running now: when it started, and the engine and driver connection to stop it on.
        self._running: tuple[float, Engine, Any] | None = None

    def execute(self) -> None:
        """Run every query, in order, on as few connections as possible; called in a worker thread, never raises."""
        try:
            with self._engines.lease(self.target) as engine:
                self._execute(engine)
        except ProbeError as error:
            self._fail_rest(error)
        except Exception as error:  # noqa: BLE001 - a bug must cost one probe, not the scrape or the worker
            log.error("probe of target %s failed unexpectedly: %s", self.target.name, where_it_failed(error))
            self._fail_rest(ProbeError(f"internal error ({type(error).__name__}), see sqlprobe's log"))

    def _execute(self, engine: Engine) -> None:
        fetch = fetcher_for(engine)
        connection: PoolProxiedConnection | None = None
        first_on_checkout = False
        try:
            for query in self._queries:
                cached = self._cached(query)
                if cached is not None:
                    if not self._finish(cached):
                        return
                    continue
                # A connection is checked out when needed: first, and again after one was lost mid-probe.
                if connection is None or not connection.is_valid:
                    if connection is not None:
                        connection.close()
                        connection = None
                    connection = self._checkout(engine)
                    first_on_checkout = True
                result = self._run_query(engine, fetch, connection, query)
                if first_on_checkout and not connection.is_valid and not self._abandoned:
                    # The pool handed out a connection that had gone stale (server restarted,
                    # wait_timeout, session killed): the same statement on a fresh one answers for it.
                    connection.close()
                    connection = None
                    # If that fails too, the connect error (server down, password changed) is what the
                    # operator can act on, and it stands for every query of the probe.
                    connection = self._checkout(engine)
                    result = self._run_query(engine, fetch, connection, query)
                first_on_checkout = False
                if not self._finish(result):
                    # Its statement may have been killed half-way: never hand this connection back.
                    if connection.is_valid:  # not lost (or discarded) already
                        connection.invalidate()
                    return
                if query.min_interval is not None and result.success:
                    self._cache[self.target.name, query.sql, query.parameters] = (
                        self.target,
                        result,
                    )  # never a failure
        except _Abandoned:
            return
        finally:
            if connection is not None:
                connection.close()

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

    def _checkout(self, engine: Engine) -> PoolProxiedConnection:
        if self._abandoned:
            raise _Abandoned
        try:
            with checkout_deadline(self._deadline):
                # The pooled DBAPI connection itself: SQLAlchemy's Connection and result objects cost as much
                # CPU as the driver's own work for these small queries, and probes need none of what they add.
                connection = engine.raw_connection()
        except engine.dialect.loaded_dbapi.Error as error:  # raw_connection() leaves the driver's errors as they are
            raise ConnectFailed(_scrub(str(error), self.target)) from None
        except PoolTimeoutError:
            raise ConnectFailed("no free connection in the target's pool (too many probes of it at once)") from None
        except SQLAlchemyError as error:
            raise ConnectFailed(_scrub(str(error), self.target)) from None
        return connection

    def _run_query(self, engine: Engine, fetch: Fetch, connection: PoolProxiedConnection, query: Query) -> QueryResult:
        started = time.monotonic()
        dialect = engine.dialect
        with self._lock:
            if self._abandoned:
                raise _Abandoned
            self._running = (started, engine, connection.dbapi_connection)
        try:
            fetched = self._fetch(fetch, dialect, connection.dbapi_connection, query)
            if fetched is None:
                raise QueryFailed("the statement returned no result set")
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, connection.dbapi_connection, None):
                connection.invalidate(error)  # lost or killed: the next query gets a new connection
            failure = QueryFailed(_scrub(str(error), self.target))
            return failed_query(query, failure, time.monotonic() - started)
        except QueryFailed as error:
            return failed_query(query, error, time.monotonic() - started)
        duration = time.monotonic() - started
        columns, rows = fetched
        metrics = tuple(metric_result(metric, columns, rows) for metric in query.metrics)
        return QueryResult(query, duration, len(rows), None, metrics, ran_at=started)

    def _fetch(self, fetch: Fetch, dialect: Dialect, dbapi_connection: Any, query: Query) -> Fetched:
        """The query's columns and rows: of its one run, or the union of its runs, one per parameter set."""
        if not query.parameters:
            return fetch(dbapi_connection, query.sql)  # the SQL as written: % and :name need no escaping
        columns: tuple[str, ...] = ()
        rows: list[Sequence[Any]] = []
        for parameter_set in query.parameters:
            if self._abandoned:
                raise _Abandoned
            statement, arguments = bind(dialect, query.sql, parameter_set)
            fetched = fetch_with_cursor(dbapi_connection, statement, arguments)
            if fetched is None:
                return None
            columns = fetched[0]
            rows.extend(fetched[1])
        return columns, rows

    def _fail_rest(self, error: ProbeError) -> None:
        """Every query that has no result yet fails with ``error`` (unless the probe was given up)."""
        with self._lock:
            self._running = None
            if not self._abandoned:
                self._finished.extend(failed_query(query, error) for query in self._queries[len(self._finished) :])

    @property
    def abandoned(self) -> bool:
        """True once the probe gave up on this run."""
        return self._abandoned

    def abandon(self) -> Interrupt | None:
        """Mark the run as past its deadline; return how to stop the statement still running, if any."""
        with self._lock:
            self._abandoned = True
            # Made only now: few statements ever need stopping.
            return interrupter_for(*self._running[1:]) if self._running is not None else None

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
        return ProbeResult(self.target, budget, duration, tuple(finished))


class _Abandoned(Exception):
    """Raised inside the worker when the probe was given up before the next statement."""


def _scrub(message: str, target: Target) -> str:
    """Driver messages never hold the password; this makes sure of it."""
    password = target.url.password
    return message.replace(password, "***") if password else message
