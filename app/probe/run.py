"""One run of a target's queries, as a task on the event loop: connections checked out and given back, statements
run and tracked so that a stop reaches the one running, failures translated into the probe's results. No HTTP."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar

from app.config import Query, Target
from app.config.parameters import bind
from app.drivers.dialect import DEADLINE_GRACE, Fetched
from app.drivers.driver import Session, Stale
from app.drivers.engine_cache import AnyDriver, EngineCache
from app.errors import ConnectFailed, DeadlineExceeded, ProbeError, QueryFailed, QueryTimedOut, where_it_failed
from app.probe.failures import CONNECT_ERRORS, connect_failed, let_go, scrub, unexpected_message
from app.probe.kept_results import ResultCache, keep, kept_result
from app.probe.results import ProbeResult, QueryResult, failed_query
from app.probe.samples import metric_result

log = logging.getLogger(__name__)

T = TypeVar("T")

# The statement running: the driver and the connection it runs on.
Running = tuple[AnyDriver, Session]


class Run:
    """One run of a target's queries, as a task on the event loop; the probes waiting for it read its result."""

    def __init__(
        self,
        target: Target,
        queries: tuple[Query, ...],
        engines: EngineCache,
        cache: ResultCache,
        deadline: float | None = None,
    ) -> None:
        self.target = target
        # When the first probe waiting for it gives up (time.monotonic()): a credentials command must end before.
        self._deadline = time.monotonic() + target.timeout if deadline is None else deadline
        self.task: asyncio.Task[None] | None = None
        self._queries = queries
        self._engines = engines
        self._cache = cache
        self._finished: list[QueryResult] = []
        self._abandoned = False
        self._session: Session | None = None  # the run's connection now
        self._running: Running | None = None
        self._running_since = 0.0

    async def execute(self) -> None:
        """Run every query, in order, on as few connections as possible; never raises (cancelled: returns)."""
        try:
            with self._engines.lease(self.target) as driver:
                await self._execute(driver)
        except ProbeError as error:
            self._fail_rest(error)
        except (_Abandoned, asyncio.CancelledError) as error:
            let_go(error)  # a connect cancelled half-way (psycopg's) is closed now, not at a garbage collection
            return
        except Exception as error:  # noqa: BLE001 - a bug must cost one probe, not the scrape or the loop
            # Its message too, scrubbed: a driver's own check at connect (a TLS file gone since the config was
            # loaded, say) says what is wrong only there.
            message = f"{type(error).__name__}: {scrub(unexpected_message(error), self.target)}"
            log.error(
                "probe of target %s failed unexpectedly: %s (%s)", self.target.name, message, where_it_failed(error)
            )
            self._fail_rest(ProbeError(f"unexpected error: {message}; see sqlprobe's log"))
        finally:
            self._running = None

    async def _execute(self, driver: AnyDriver) -> None:
        ran = False  # a statement of this run reached the server
        discard = True  # unless the run gets to its end
        try:
            for query in self._queries:
                cached = kept_result(self._cache, self.target, query)
                if cached is not None:
                    if not self._finish(cached):
                        return
                    continue
                result = await self._run_query(driver, query)
                ran = True
                if not self._finish(result):
                    return  # its statement may have been stopped half-way: the connection is discarded below
                keep(self._cache, self.target, query, result)
            if not ran and self._queries:
                # Every result was kept from an earlier probe: still, the server must answer in this one.
                await self._ping(driver)
            discard = self._abandoned
        finally:
            await self._release(driver, discard)

    async def _connection(self, driver: AnyDriver) -> Session:
        """The run's connection: checked out when first needed, and again after one was lost or discarded."""
        if self._session is not None and not self._session.valid:
            await self._release(driver, discard=True)
        if self._session is None:
            self._session = await self._checkout(driver)
        return self._session

    async def _release(self, driver: AnyDriver, discard: bool) -> None:
        """Give the run's connection back, its read-only transaction ended first; closed for good on any doubt."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if not discard and session.valid and session.in_transaction:
                await self._tracked(session, driver, driver.end(session))
        except _Abandoned:
            discard = True
        except driver.errors:
            discard = True
        except BaseException:
            discard = True
            raise
        finally:
            # Given up on meanwhile (during the COMMIT, say): a kill may be on its way for this connection, and must
            # not reach the next probe's statement on it.
            await driver.release(session, discard or self._abandoned)

    async def _tracked(
        self, session: Session, driver: AnyDriver, step: Awaitable[T], started: float | None = None
    ) -> T:
        """``step`` on ``session`` as the run's running statement: the one a stop is sent for if the run is given up."""
        if self._abandoned:
            if isinstance(step, Coroutine):
                step.close()  # never started
            raise _Abandoned
        self._running, self._running_since = (driver, session), time.monotonic() if started is None else started
        try:
            return await step
        finally:
            self._running = None

    async def _on_fresh_if_stale(self, driver: AnyDriver, step: Callable[[Session], Awaitable[T]]) -> T:
        """``step`` on the run's connection, or on new ones while the pool hands out stale ones."""
        while True:
            try:
                return await step(await self._connection(driver))
            except Stale:
                # Nothing reached the server: a new connection answers for it. If that fails too, the connect
                # error (server down, password changed) is what the operator can act on, for every query.
                await self._release(driver, discard=True)

    async def _ping(self, driver: AnyDriver) -> None:
        failure: ProbeError
        try:
            await self._on_fresh_if_stale(driver, lambda session: self._tracked(session, driver, driver.ping(session)))
            return
        except driver.errors as error:
            failure = ConnectFailed(f"the server did not answer a ping: {scrub(str(error), self.target, error)}")
        except ConnectFailed as error:
            failure = error
        if not self._abandoned:  # the kept results are not served: the server did not answer this probe
            self._finished = [failed_query(query, failure) for query in self._queries]

    def _finish(self, result: QueryResult) -> bool:
        """Record a query's result; False if the probe was given up meanwhile (the result is dropped)."""
        if self._abandoned:
            return False
        self._finished.append(result)
        return True

    async def _checkout(self, driver: AnyDriver) -> Session:
        if self._abandoned:
            raise _Abandoned
        try:
            return await driver.checkout(self._deadline)
        except CONNECT_ERRORS + driver.errors as error:
            failure = connect_failed(error, driver, self.target)
        raise failure  # out here, with no link to the driver's error: the probe's result keeps it

    async def _run_query(self, driver: AnyDriver, query: Query) -> QueryResult:
        started = time.monotonic()

        async def execute(session: Session) -> Fetched:
            last = query is self._queries[-1]
            if not query.parameters:  # the SQL as written: % and :name need no escaping
                step = driver.execute(session, query.sql, last, max_rows=query.row_limit, timeout=query.timeout)
                return await self._tracked(session, driver, step, started)
            # The union of its runs, one per parameter set.
            columns: tuple[str, ...] = ()
            rows: list[Sequence[Any]] = []
            for number, parameter_set in enumerate(query.parameters, start=1):
                statement, arguments = bind(driver.sa_dialect, query.sql, parameter_set)
                ends = last and number == len(query.parameters)
                step = driver.execute(
                    session, statement, ends, arguments, query.row_limit - len(rows), timeout=query.timeout
                )
                fetched = await self._tracked(session, driver, step, started)
                if fetched is None:
                    return None
                columns = fetched[0]
                rows.extend(fetched[1])
                if len(rows) >= query.row_limit:
                    break  # the union is cut there, as one result would be
            return columns, rows

        # The server enforces the query's timeout where it can; past it and the grace, the run stops the statement
        # itself (KILL QUERY, a cancel request), as it would at the probe's deadline, and goes on with the next.
        backstop = None
        stopped: list[bool] = []
        if query.timeout is not None:
            loop = asyncio.get_running_loop()
            backstop = loop.call_later(query.timeout + DEADLINE_GRACE, self._stop_running, stopped)
        try:
            fetched = await self._on_fresh_if_stale(driver, execute)
        except driver.errors as error:
            told = scrub(str(error), self.target, error)
            duration = time.monotonic() - started
            if stopped:
                await self._release(driver, discard=True)
            if query.timeout is not None and duration >= query.timeout:
                timed_out = QueryTimedOut(f"the query's timeout of {query.timeout:g}s passed: {told}")
                return failed_query(query, timed_out, duration)
            return failed_query(query, QueryFailed(told), duration)
        finally:
            if backstop is not None:
                backstop.cancel()
        if stopped:
            # A KILL QUERY is on its way and lands by connection id: had the statement ended first, it would stop
            # whatever ran next on that connection. Closed, so the next query (or probe) runs on another.
            await self._release(driver, discard=True)
        if fetched is None:
            # A statement without a result set (SET, USE, COMMIT...) may have changed the session: it is not what
            # sqlprobe made it any more, so it is closed, and the next query gets a new connection.
            await self._release(driver, discard=True)
            failure = QueryFailed("the statement returned no result set (its connection was closed)")
            return failed_query(query, failure, time.monotonic() - started)
        if len(fetched[1]) >= query.row_limit:
            # Cut there: the rest of the result was not read, so the connection is out of step (or closed already).
            await self._release(driver, discard=True)
        duration = time.monotonic() - started
        columns, rows = fetched
        metrics = tuple(metric_result(metric, columns, rows) for metric in query.metrics)
        return QueryResult(query, duration, len(rows), None, metrics, ran_at=started)

    def _stop_running(self, stopped: list[bool]) -> None:
        """Stop the statement running now on the server (a query past its timeout); its connection is closed if
        the stop cannot be sent, and the run goes on with the next query on another (``stopped`` says so)."""
        if self._running is None or self._abandoned:
            return
        driver, session = self._running
        stop = driver.stopper(session)
        if stop is None:
            return  # SQLite's statements: the probe's deadline is their limit
        connection_id = None if session.identity is None else session.identity.connection_id
        sever = partial(driver.sever, session)
        self._engines.killer.request(
            session.connection, self.target.name, connection_id, stop, sever, self.target.scrubbed
        )
        stopped.append(True)

    def _fail_rest(self, error: ProbeError) -> None:
        """Every query that has no result yet fails with ``error`` (unless the probe was given up)."""
        if not self._abandoned:
            self._finished.extend(failed_query(query, error) for query in self._queries[len(self._finished) :])

    @property
    def abandoned(self) -> bool:
        """True once the probes gave up on this run."""
        return self._abandoned

    def abandon(self) -> Running | None:
        """Mark the run as given up; the statement still running, if any, and where."""
        self._abandoned = True
        return self._running

    def result(self, budget: float, duration: float) -> ProbeResult:
        """What finished so far; queries that did not finish fail with the deadline."""
        finished = list(self._finished)
        unfinished = self._queries[len(finished) :]
        if unfinished:
            error = DeadlineExceeded(budget)
            in_flight = time.monotonic() - self._running_since if self._running is not None else 0.0
            finished.append(failed_query(unfinished[0], error, in_flight))
            finished.extend(failed_query(query, error) for query in unfinished[1:])
        return ProbeResult(self.target, budget, duration, tuple(finished), at=time.monotonic())


class _Abandoned(Exception):
    """Raised inside the run when the probe was given up before the next statement."""
