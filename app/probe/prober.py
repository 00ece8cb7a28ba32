"""Probe one target: run its queries within a deadline, sharing a run between probes that arrive together. No HTTP."""

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial

from app.config import Target
from app.drivers.dialect import DEADLINE_GRACE
from app.drivers.driver import Session
from app.drivers.engine_cache import AnyDriver, EngineCache
from app.probe.results import ProbeResult
from app.probe.run import ResultCache, Run

# Seconds after a run was given up (and its statement stopped) before it is cancelled, its connection closed.
SEVER_AFTER = DEADLINE_GRACE / 2


@dataclass(slots=True)
class _Flight:
    """One run of a target's queries, and the probes waiting for it."""

    run: "Run"
    waiters: list["asyncio.Future[None]"] = field(default_factory=list)
    landed: bool = False  # the run is over and its waiters were woken

    def land(self, _: object = None) -> None:
        """Wake every probe still waiting for this run (once the run is over)."""
        self.landed = True
        for waiter in self.waiters:
            _wake(waiter)


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


class Prober:
    """Runs probes as tasks on the event loop: a probe of a silent server holds a socket and a coroutine, no thread."""

    def __init__(self, engines: EngineCache) -> None:
        self._engines = engines
        self._flights: dict[tuple[str, frozenset[str] | None], _Flight] = {}
        self._cache: ResultCache = {}
        self._runs: set[asyncio.Task[None]] = set()  # every run going, given up on or not

    async def probe(
        self, target: Target, query_sets: frozenset[str] | None, budget: float, since: float | None = None
    ) -> ProbeResult:
        """Probe ``target``; the answer is back within ``budget`` seconds whatever the server does, counted from
        ``since`` (time.monotonic(): when the request arrived), or from now.

        Probes of the same target and query sets that arrive while one runs (two Prometheus servers
        scraping it) wait for that run instead of starting their own: each gets what finished by its own
        deadline, and the run goes on until the last of them has given up.
        """
        loop = asyncio.get_running_loop()
        started = time.monotonic() if since is None else min(since, time.monotonic())
        key = (target.name, query_sets)
        flight = self._flights.get(key)
        if flight is None or flight.run.target is not target or flight.landed or flight.run.abandoned:
            run = Run(target, target.queries_for(query_sets), self._engines, self._cache, started + budget)
            flight = self._flights[key] = _Flight(run)
            run.task = loop.create_task(run.execute())
            run.task.add_done_callback(flight.land)
            self._runs.add(run.task)
            run.task.add_done_callback(self._runs.discard)
        waiter = loop.create_future()
        flight.waiters.append(waiter)
        timer = loop.call_later(max(0.0, started + budget - time.monotonic()), _wake, waiter)
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

    def _stop(self, loop: asyncio.AbstractEventLoop, run: "Run") -> None:
        """Give up on ``run``: a statement running is stopped on the server (KILL QUERY, a cancel request), and its
        connection closed soon after if the server's answer does not come (a silent peer); a run connecting or
        between statements is cancelled at once."""
        task = run.task
        running = run.abandon()
        if task is None:
            return
        if running is None:
            task.cancel()
            return
        driver, session = running
        sever = partial(_sever, task, driver, session)
        stop = driver.stopper(session)
        if stop is not None:
            target = run.target
            connection_id = None if session.identity is None else session.identity.connection_id
            self._engines.killer.request(session.connection, target.name, connection_id, stop, sever, target.scrubbed)
        loop.call_later(SEVER_AFTER, sever)

    def forget_results(self) -> None:
        """Drop the results kept for min_interval (after a reload: they belong to the old config)."""
        self._cache.clear()

    def forget_targets(self, names: list[str]) -> None:
        """Drop the results kept for the targets named (module targets let go)."""
        gone = set(names)
        for key in [key for key in list(self._cache) if key[0] in gone]:  # list(): a reload's thread may call this
            self._cache.pop(key, None)

    def close(self) -> None:
        """Stop every run still going (at shut-down, after the probes in flight have answered)."""
        for flight in list(self._flights.values()):
            if flight.run.task is not None:
                flight.run.task.cancel()

    async def wait_closed(self) -> None:
        """Cut the runs given up on that still go (their kills sent by now), and wait until every run has ended."""
        runs = list(self._runs)
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


def _sever(task: "asyncio.Task[None]", driver: AnyDriver, session: Session) -> None:
    """Close ``session``'s connection under the statement waiting on it, and cancel the run (if still going).

    Closed first: a driver cancelled in a wait may wait more (psycopg sends its own cancel request, and waits for
    the statement to end, before it lets a cancellation through).
    """
    if not task.done():
        driver.sever(session)
        task.cancel()
