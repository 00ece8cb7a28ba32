"""Probe one target: run its queries within a deadline, sharing a run between probes that arrive together. No HTTP."""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial

from app.config import Target
from app.drivers.dialect import DEADLINE_GRACE
from app.drivers.driver import Session
from app.drivers.engine_cache import AnyDriver, EngineCache
from app.probe.kept_results import ResultCache
from app.probe.pipelined import PipedRun
from app.probe.results import ProbeResult
from app.probe.run import Run

log = logging.getLogger(__name__)

# Seconds after a run was given up (and its statement stopped) before it is cancelled, its connection closed.
SEVER_AFTER = DEADLINE_GRACE / 2

# Probes in flight at most, in all and per module: each may hold a connection to its server (and, given up, a
# KILL QUERY's) until its deadline, so a flood of probes of hung addresses costs at most this many of each.
DEFAULT_MAX_PROBES = 4096
DEFAULT_MAX_MODULE_PROBES = 2048
# Refused probes are logged at most this often (seconds), with how many there were.
_LOG_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """Probes in flight at most: in all, and of one module's targets."""

    total: int = DEFAULT_MAX_PROBES
    per_module: int = DEFAULT_MAX_MODULE_PROBES


DEFAULT_PROBE_LIMITS = ProbeLimits()


class TooManyProbes(Exception):
    """A probe refused before it started: the bound on probes in flight is reached. The message says which."""


class ClientGone(Exception):
    """The probe's client went away before its answer: nobody waits for it any more."""


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


def _woken_by(waiter: "asyncio.Future[None]", _: object) -> None:
    _wake(waiter)


class Prober:
    """Runs probes as tasks on the event loop: a probe of a silent server holds a socket and a coroutine, no thread."""

    def __init__(self, engines: EngineCache, limits: ProbeLimits = DEFAULT_PROBE_LIMITS) -> None:
        self._engines = engines
        self._limits = limits
        self._in_flight = 0
        self._in_flight_by_module: dict[str, int] = {}
        self._refused = 0
        self._refused_logged = -_LOG_EVERY
        self._flights: dict[tuple[str, frozenset[str] | None], _Flight] = {}
        self._cache: ResultCache = {}
        self._runs: set[asyncio.Task[None]] = set()  # every run going, given up on or not

    async def probe(
        self,
        target: Target,
        query_sets: frozenset[str] | None,
        budget: float,
        since: float | None = None,
        gone: "asyncio.Future[None] | None" = None,
    ) -> ProbeResult:
        """Probe ``target``; the answer is back within ``budget`` seconds whatever the server does, counted from
        ``since`` (time.monotonic(): when the request arrived), or from now.

        Probes of the same target and query sets that arrive while one runs (two Prometheus servers
        scraping it) wait for that run instead of starting their own: each gets what finished by its own
        deadline, and the run goes on until the last of them has given up. ``gone`` is done when the probe's
        client has gone away: the probe gives up at once (ClientGone). Beyond the bound on probes in flight, the
        probe is refused before it starts (TooManyProbes).
        """
        if gone is not None and gone.done():
            raise ClientGone
        self._admit(target.module)
        try:
            return await self._probe(target, query_sets, budget, since, gone)
        finally:
            self._in_flight -= 1
            if target.module is not None:
                left = self._in_flight_by_module[target.module] - 1
                if left:
                    self._in_flight_by_module[target.module] = left
                else:
                    del self._in_flight_by_module[target.module]

    @property
    def in_flight(self) -> int:
        """Probes being answered now."""
        return self._in_flight

    def _admit(self, module: str | None) -> None:
        """Count one more probe in flight, or refuse it with a sentence when a bound is reached."""
        refusal = None
        if self._in_flight >= self._limits.total:
            refusal = f"sqlprobe has {self._in_flight} probes in flight already, its bound (--max-probes-in-flight)"
        elif module is not None and self._in_flight_by_module.get(module, 0) >= self._limits.per_module:
            refusal = (
                f"module {module!r} has {self._limits.per_module} probes in flight already, its bound "
                "(--max-module-probes-in-flight)"
            )
        if refusal is not None:
            self._log_refusal()
            raise TooManyProbes(f"{refusal}: try again later")
        self._in_flight += 1
        if module is not None:
            self._in_flight_by_module[module] = self._in_flight_by_module.get(module, 0) + 1

    def _log_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= _LOG_EVERY:
            log.warning(
                "probes refused since the last such line, beyond the bound on probes in flight: %d",
                self._refused,
                extra={"event": "probes_refused", "refused": self._refused},
            )
            self._refused_logged, self._refused = now, 0

    async def _probe(
        self,
        target: Target,
        query_sets: frozenset[str] | None,
        budget: float,
        since: float | None,
        gone: "asyncio.Future[None] | None",
    ) -> ProbeResult:
        loop = asyncio.get_running_loop()
        started = time.monotonic() if since is None else min(since, time.monotonic())
        key = (target.name, query_sets)
        flight = self._flights.get(key)
        if flight is None or flight.run.target is not target or flight.landed or flight.run.abandoned:
            run = PipedRun(target, target.queries_for(query_sets), self._engines, self._cache, started + budget)
            flight = self._flights[key] = _Flight(run)
            run.task = loop.create_task(run.execute())
            run.task.add_done_callback(flight.land)
            self._runs.add(run.task)
            run.task.add_done_callback(self._runs.discard)
        waiter = loop.create_future()
        flight.waiters.append(waiter)
        timer = loop.call_later(max(0.0, started + budget - time.monotonic()), _wake, waiter)
        left = partial(_woken_by, waiter)
        if gone is not None:
            gone.add_done_callback(left)
        try:
            await waiter  # woken when the run lands, the budget is spent or the client goes, whichever comes first
        finally:
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(left)  # a keep-alive connection's future outlives many probes
            flight.waiters.remove(waiter)
            if not flight.landed and not flight.waiters:
                # Every probe waiting for the run gave up (deadlines, clients gone): stop it, on the server too.
                self._stop(loop, flight.run)
            if (flight.landed or flight.run.abandoned) and self._flights.get(key) is flight:
                del self._flights[key]
        if gone is not None and gone.done() and not flight.landed:
            raise ClientGone
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
