"""Probe one target: run its queries within a deadline and turn rows into samples. Knows no HTTP."""

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import PoolProxiedConnection

from app.config import Metric, Query, Target
from app.engines import EngineCache, Fetch, Interrupt, checkout_deadline, fetcher_for, interrupter_for
from app.errors import (
    ColumnAmbiguous,
    ColumnMissing,
    ConnectFailed,
    DeadlineExceeded,
    ProbeError,
    QueryFailed,
    where_it_failed,
)
from app.workers import Workers

log = logging.getLogger(__name__)

LabelValues = tuple[str, ...]
_NOTHING_SKIPPED: Mapping[str, int] = MappingProxyType({})

# Results are named tuples: immutable like the config's frozen dataclasses, and made several times per probe, where
# a frozen dataclass's __init__ (object.__setattr__ per field) costs three times as much.


class MetricResult(NamedTuple):
    """The samples one metric got from its query, the rows it skipped, or why it failed."""

    metric: Metric
    samples: tuple[tuple[LabelValues, float], ...] = ()
    skipped: Mapping[str, int] = _NOTHING_SKIPPED
    error: ProbeError | None = None


class QueryResult(NamedTuple):
    """One SQL text's run: rows returned, time taken, and what its metrics made of the rows."""

    query: Query
    duration: float
    rows: int | None
    error: ProbeError | None
    metrics: tuple[MetricResult, ...]
    ran_at: float = 0.0  # time.monotonic() when the SQL ran
    from_cache: bool = False  # served again within the metrics' min_interval, not run by this probe

    @property
    def success(self) -> bool:
        """True when the query ran and every metric it feeds could read its columns."""
        return self.error is None and all(result.error is None for result in self.metrics)


class ProbeResult(NamedTuple):
    """Everything one probe found, in the order the queries ran."""

    target: Target
    budget: float
    duration: float
    queries: tuple[QueryResult, ...]

    @property
    def success(self) -> bool:
        """True only if the connection and every query succeeded."""
        return all(query.success for query in self.queries)

    def metric_results(self) -> Iterator[tuple[MetricResult, QueryResult]]:
        """Each metric's result with the query result that fed it."""
        for query in self.queries:
            for metric in query.metrics:
                yield metric, query


def failed_query(query: Query, error: ProbeError, duration: float = 0.0) -> QueryResult:
    """A query that did not run (or did not finish): every metric it feeds fails with ``error``."""
    return QueryResult(query, duration, None, error, tuple(MetricResult(m, error=error) for m in query.metrics))


# Results of queries whose metrics set min_interval, by (target name, SQL): the target they ran for and the result.
ResultCache = dict[tuple[str, str], tuple[Target, QueryResult]]


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
                if first_on_checkout and result.error is not None and not connection.is_valid and not self._abandoned:
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
                    connection.invalidate()
                    return
                if query.min_interval is not None and result.success:
                    self._cache[self.target.name, query.sql] = (self.target, result)  # never a failure
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
        target, result = self._cache.get((self.target.name, query.sql), (None, None))
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
            fetched = fetch(connection.dbapi_connection, query.sql, query.row_limit)
            if fetched is None:
                raise QueryFailed("the statement returned no result set")
            if len(fetched[1]) >= query.row_limit:
                # Cut there: the rest of the result was not read, so the connection is out of step (or closed).
                connection.invalidate()
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, connection.dbapi_connection, None):
                connection.invalidate(error)  # lost or killed: the next query gets a new connection
            failure = QueryFailed(_scrub(str(error), self.target))
            return failed_query(query, failure, time.monotonic() - started)
        except QueryFailed as error:
            return failed_query(query, error, time.monotonic() - started)
        duration = time.monotonic() - started
        columns, rows = fetched
        metrics = tuple(_metric_result(metric, columns, rows) for metric in query.metrics)
        return QueryResult(query, duration, len(rows), None, metrics, ran_at=started)

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


def _metric_result(metric: Metric, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> MetricResult:
    value_at, label_at, unusable = _positions(metric.value, metric.labels, columns)
    if unusable is not None:
        return MetricResult(metric, error=unusable)
    samples: dict[LabelValues, float] = {}
    skipped: dict[str, int] = {}
    for row in rows:
        reason = (
            _add_sample(samples, row, value_at, label_at, metric.max_label_length)
            if len(samples) < metric.max_rows
            else "max_rows"
        )
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
    return MetricResult(metric, tuple(samples.items()), skipped)


@lru_cache(maxsize=4096)
def _positions(
    value: str, labels: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[int, tuple[int, ...], ProbeError | None]:
    """Where a metric's value and labels are in a result with ``columns`` (case-insensitive), or why they are not.

    Worked out once per metric and result shape: a query returns the same columns on every probe.
    """
    positions: dict[str, int] = {}
    twins: dict[str, int] = {}  # a name that a second column also answers to, ignoring case: that column
    for index, name in enumerate(columns):
        if positions.setdefault(name.lower(), index) != index:
            twins.setdefault(name.lower(), index)
    found = []
    for role, column in (("value", value), *(("label", label) for label in labels)):
        position = positions.get(column.lower())
        if position is None:
            return -1, (), ColumnMissing(role, column, columns)
        if column.lower() in twins:
            return -1, (), ColumnAmbiguous(role, column, columns[position], columns[twins[column.lower()]])
        found.append(position)
    return found[0], tuple(found[1:]), None


def _add_sample(
    samples: dict[LabelValues, float],
    row: Sequence[Any],
    value_at: int,
    label_at: tuple[int, ...],
    max_label_length: int,
) -> str | None:
    """Add ``row``'s sample; the reason it was skipped, if it was."""
    raw = row[value_at]
    # Most cells are numbers already: they need no more than float().
    value = float(raw) if type(raw) in _NUMBER_TYPES else _number(raw)
    if isinstance(value, str):
        return value
    labels = tuple([_label(row[position]) for position in label_at]) if label_at else ()
    if labels and max(map(len, labels)) > max_label_length:
        return "label_too_long"
    if labels in samples:
        return "duplicate_labels"
    samples[labels] = value
    return None


_NUMBER_TYPES = frozenset({int, float, Decimal})


def _number(raw: object) -> float | str:
    """The sample value of a cell, or the reason it has none."""
    if raw is None:
        return "null_value"
    if isinstance(raw, int | float | Decimal):
        return float(raw)
    if isinstance(raw, timedelta):  # MySQL TIME columns, e.g. the age of the oldest query
        return raw.total_seconds()
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return "non_numeric_value"
    return "non_numeric_value"


def _label(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray):
        return raw.decode("utf-8", "replace")
    return str(raw)
