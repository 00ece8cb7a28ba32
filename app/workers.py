"""Threads that run the probes' blocking database work, and tell the event loop when each piece is done.

A probe needs no more from a thread pool than "run this, then wake the loop": concurrent.futures' Future,
and asyncio's wrapping of it, cost as much CPU per probe as a small query, so this does only that.
"""

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.errors import where_it_failed

log = logging.getLogger(__name__)

_Work = tuple[Callable[[], None], asyncio.AbstractEventLoop, Callable[[], None]]


@dataclass(slots=True)
class _Idle:
    """A thread waiting for work: it sleeps on its own lock until the work (or None, to end) is handed to it."""

    wake: threading.Lock = field(default_factory=threading.Lock)
    work: _Work | None = None


class Workers:
    """At most ``max_threads`` threads, started when no idle one is left and kept for the next work.

    Work goes to the thread that became idle last, woken alone: threads waiting on one shared queue wake one
    another (CPython's SimpleQueue wakes a second waiter for every piece), and the last thread to run has the
    warmest caches.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []  # a stack: the last thread to become idle is woken first
        self._waiting: deque[_Work] = deque()  # work that came while every thread was busy
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, work: Callable[[], None], loop: asyncio.AbstractEventLoop, then: Callable[[], None]) -> None:
        """Run ``work`` on a thread, then ``then`` on ``loop``; ``work`` waits in line when every thread is busy."""
        item = (work, loop, then)
        with self._lock:
            if self._closed:
                raise RuntimeError("the workers are closed")
            if self._idle:
                idle = self._idle.pop()
                idle.work = item
                idle.wake.release()
                return
            if len(self._threads) >= self._max_threads:
                self._waiting.append(item)
                return
            # A daemon: an app whose lifespan never ran close() (a test, an embedding) must not keep its process
            # alive. sqlprobe itself closes them, after uvicorn has let the probes in flight finish.
            thread = threading.Thread(
                target=self._serve, args=(item,), name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Drop the work still in line and let every thread end after its current work."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            idle, self._idle = self._idle, []
        for waiting in idle:
            waiting.wake.release()  # with no work: the thread ends

    def _serve(self, item: _Work) -> None:
        idle = _Idle()
        idle.wake.acquire()  # held: the thread sleeps on it until work is handed over
        while True:
            work, loop, then = item
            try:
                work()
            except Exception as error:  # noqa: BLE001 - the thread must live on for the next work
                log.error("work on a %s thread failed unexpectedly: %s", self._name, where_it_failed(error))
            with self._lock:
                next_item = self._waiting.popleft() if self._waiting else None
                if next_item is None and not self._closed:
                    # Idle before waking the loop: work that "then" leads to finds this thread free, not a new one.
                    self._idle.append(idle)
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile (shutdown): nobody waits
                loop.call_soon_threadsafe(then)
            if next_item is None:
                if self._closed:
                    return
                idle.wake.acquire()
                if idle.work is None:
                    return  # closed
                next_item, idle.work = idle.work, None
            item = next_item
