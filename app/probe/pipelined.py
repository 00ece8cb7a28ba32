"""A run whose statements reach the server in one write, where the driver can (read-only MySQL/MariaDB targets).

Every statement of the probe is sent at once, each in its read-only transaction with its own time limit
(app/drivers/mysql_pipeline.py), and their results are read as they come: a query's duration runs from when its
turn came (the write, or the previous statement's answer) to its own answer. The server stops at a statement that
fails and runs nothing after it, so what is left is sent again from there, on the same connection: one failure
costs one round trip more. Where the connection had to be closed (a result cut at its rows' bound, a lost
connection, a statement stopped from outside), what is left goes on a new one.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.config import Query
from app.config.parameters import bind
from app.drivers.dialect import DEADLINE_GRACE, Arguments, Pipe
from app.drivers.driver import Driver, Session
from app.drivers.engine_cache import AnyDriver
from app.errors import QueryFailed, QueryTimedOut
from app.probe.failures import scrub
from app.probe.kept_results import keep, kept_result
from app.probe.results import QueryResult, failed_query
from app.probe.run import Run
from app.probe.samples import metric_result

# A write's statements, in bytes, past which the next query goes in a write of its own: a server refuses a packet
# above its max_allowed_packet (1 MiB on MySQL 5.5 by default) whole, where each statement alone would have fitted.
# A query's statements (one per parameter set) stay in one write; at least one query goes in each.
WRITE_BUDGET = 64 * 1024


@dataclass(slots=True)
class _Sent:
    """One write of a run's statements, and what became of each query's."""

    session: Session
    pipe: Pipe | None  # None: every query's text was refused before sending
    statements: dict[int, int]  # a query's place in the run: how many of its statements the write holds
    refused: dict[int, Exception] = field(default_factory=dict)  # a query's place: why its text was not sent
    turn: float = 0.0  # when the next statement's turn came: the write, then each answer (time.monotonic())

    @property
    def ended(self) -> bool:
        return self.pipe is None or self.pipe.ended


class PipedRun(Run):
    """A run of a target's queries: in one write where the driver can, else a write per statement (Run)."""

    async def _execute(self, driver: AnyDriver) -> None:
        if not isinstance(driver, Driver) or not driver.pipes:
            await super()._execute(driver)
            return
        discard = True  # unless the run gets to its end
        try:
            await self._piped(driver)
            discard = self._abandoned
        finally:
            await self._release(driver, discard)

    async def _piped(self, driver: Driver) -> None:
        queries = self._queries
        kept = [kept_result(self._cache, self.target, query) for query in queries]
        sent: _Sent | None = None
        for number, query in enumerate(queries):
            result = kept[number]
            if result is None:
                if sent is None or (number not in sent.refused and (sent.ended or number not in sent.statements)):
                    # The first statement to run, or what is left after a write whose statements stopped early.
                    started = time.monotonic()
                    try:
                        sent = await self._send(driver, number, kept)
                    except driver.errors as error:
                        sent = None
                        told = QueryFailed(scrub(str(error), self.target, error))
                        result = failed_query(query, told, time.monotonic() - started)
                if sent is not None:
                    result = await self._read(driver, sent, number, query)
                assert result is not None
                keep(self._cache, self.target, query, result)
            if not self._finish(result):
                return
        if queries and all(result is not None for result in kept):
            # Every result was kept from an earlier probe: still, the server must answer in this one.
            await self._ping(driver)

    async def _send(self, driver: Driver, number: int, kept: Sequence[QueryResult | None]) -> _Sent:
        """The statements of the run's queries from ``number`` on (but kept ones) in one write, on the run's
        connection (new ones while the pool hands out stale ones)."""

        async def send(session: Session) -> _Sent:
            texts: list[str] = []
            max_rows: list[int] = []
            size = 0
            sent = _Sent(session, None, {})
            for later in range(number, len(self._queries)):
                if kept[later] is not None:
                    continue
                query = self._queries[later]
                try:
                    prepared = [
                        driver.prepare(session, *statement, query.timeout) for statement in _bound(driver, query)
                    ]
                except driver.errors as error:
                    sent.refused[later] = error
                    continue
                size += sum(len(text.encode("utf-8", "surrogateescape")) for text in prepared)
                if texts and size > WRITE_BUDGET:
                    break  # this query and the ones after it go in a later write
                texts.extend(prepared)
                max_rows.extend([query.row_limit] * len(prepared))
                sent.statements[later] = len(prepared)
                if query.timeout is not None or query.sql in driver.long_results:
                    # Past its timeout, a KILL QUERY may be sent for it, by connection id: nothing of the probe's may
                    # run after it on that connection, where the kill could land instead. A long result cut at its
                    # bound is not read to its end where nothing follows it: the connection is closed.
                    break
            if texts:
                sent.pipe = await self._tracked(session, driver, driver.pipe(session, texts, max_rows))
            sent.turn = time.monotonic()
            return sent

        return await self._on_fresh_if_stale(driver, send)

    async def _read(self, driver: Driver, sent: _Sent, number: int, query: Query) -> QueryResult:
        """Query ``number``'s answers from the write: its columns and rows (the union of its parameter sets' runs),
        or its failure."""
        started = sent.turn
        refused = sent.refused.pop(number, None)
        if refused is not None:
            return failed_query(query, QueryFailed(scrub(str(refused), self.target, refused)))
        assert sent.pipe is not None
        # The server enforces the query's timeout where it can; past it and the grace, the run stops the statement
        # itself, and the rest goes on a new connection (a late KILL QUERY lands by connection id).
        backstop = None
        stopped: list[bool] = []
        if query.timeout is not None:
            loop = asyncio.get_running_loop()
            backstop = loop.call_later(query.timeout + DEADLINE_GRACE, self._stop_running, stopped)
        columns: tuple[str, ...] = ()
        rows: list[Sequence[Any]] = []
        without_result = False
        failure: QueryFailed | None = None
        try:
            for _ in range(sent.statements[number]):
                if sent.pipe.ended:
                    break  # a run before was cut at the bound: the union is cut there
                fetched = await self._tracked(sent.session, driver, driver.next(sent.session, sent.pipe), started)
                if sent.pipe.overflowed:
                    driver.long_results.add(query.sql)
                if fetched is None:
                    without_result = True
                    continue
                columns = fetched[0]
                rows.extend(fetched[1])
        except driver.errors as error:
            told = scrub(str(error), self.target, error)
            timed_out = query.timeout is not None and time.monotonic() - started >= query.timeout
            failure = (
                QueryTimedOut(f"the query's timeout of {query.timeout:g}s passed: {told}")
                if timed_out
                else QueryFailed(told)
            )
        finally:
            if backstop is not None:
                backstop.cancel()
        sent.turn = time.monotonic()
        duration = sent.turn - started
        if stopped or without_result:
            # A KILL QUERY is on its way (it lands by connection id), or a statement without a result set may have
            # changed the session: closed, and what is left goes on a new connection.
            sent.pipe.ended = sent.pipe.failed = True
            await self._release(driver, discard=True)
        if failure is not None:
            return failed_query(query, failure, duration)
        if without_result:
            failure = QueryFailed("the statement returned no result set (its connection was closed)")
            return failed_query(query, failure, duration)
        rows = rows[: query.row_limit]
        metrics = tuple(metric_result(metric, columns, rows) for metric in query.metrics)
        return QueryResult(query, duration, len(rows), None, metrics, ran_at=started)


def _bound(driver: Driver, query: Query) -> list[tuple[str, Arguments | None]]:
    """A query's statements: its SQL as written, or one per parameter set, bound by the driver."""
    if not query.parameters:
        return [(query.sql, None)]
    return [bind(driver.sa_dialect, query.sql, parameter_set) for parameter_set in query.parameters]
