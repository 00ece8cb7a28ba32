"""How long probes wait for the process itself: the event loop running late, and the garbage collector's pauses.

sqlprobe_event_loop_lag_seconds is how late a timer due every 100 ms ran: the wait every coroutine on the loop had
then (a probe's answer, a statement's result). sqlprobe_gc_pause_seconds{generation} is each collection's length;
a full one stops every thread. Together they say whether a slow probe waited for its server or for sqlprobe.
"""

import asyncio
import bisect
import gc
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# How often the loop's lateness is measured: ten wake-ups a second, a few microseconds each.
INTERVAL = 0.1


class Pauses:
    """The two measures, in ``registry``; watch() runs on the loop, the collector's hook from start to stop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lag = Histogram(
            "sqlprobe_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 100 ms, in seconds: what every probe waited for the loop.",
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self._longest = Gauge(
            "sqlprobe_event_loop_lag_max_seconds",
            "The longest the event loop ran late since sqlprobe started, in seconds.",
            registry=registry,
        )
        self._most = 0.0
        self._collections = _Collections()
        registry.register(self._collections)

    async def watch(self) -> None:
        """Measure the loop's lateness until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + INTERVAL
            await asyncio.sleep(INTERVAL)
            late = max(0.0, loop.time() - due)
            self._lag.observe(late)
            if late > self._most:
                self._most = late
                self._longest.set(late)

    def start(self) -> None:
        """Time the garbage collector's collections from now on."""
        gc.callbacks.append(self._collections.on_gc)

    def stop(self) -> None:
        """Stop timing them (the hook is the process's, the app is one of several in tests)."""
        if self._collections.on_gc in gc.callbacks:
            gc.callbacks.remove(self._collections.on_gc)


class _Collections(Collector):
    """sqlprobe_gc_pause_seconds{generation}. Counted in plain integers: the collector's hook may run inside any
    code, a prometheus-client lock held by the same thread included, so it takes no lock."""

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = min(max(info.get("generation", 2), 0), 2)
        self._counts[generation][bisect.bisect_left(PAUSE_BUCKETS, took)] += 1
        self._sums[generation] += took

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "sqlprobe_gc_pause_seconds",
            "Garbage collections by generation and how long each took, in seconds (a collection stops every thread).",
            labels=["generation"],
        )
        for generation in range(3):
            counts, cumulative, buckets = self._counts[generation], 0, []
            for bound, count in zip((*map(str, PAUSE_BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
