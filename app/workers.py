"""Threads that run the probes' blocking database work, and tell the event loop when each piece is done.

A probe needs no more from a thread pool than "run this, then wake the loop": concurrent.futures' Future,
and asyncio's wrapping of it, cost as much CPU per probe as a small query, so this does only that.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from app.errors import where_it_failed

log = logging.getLogger(__name__)

_Work = tuple[Callable[[], None], asyncio.AbstractEventLoop, Callable[[], None]]


class Workers:
    """At most ``max_threads`` threads, started when no idle one is left and kept for the next work."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by each thread that waits for work
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, work: Callable[[], None], loop: asyncio.AbstractEventLoop, then: Callable[[], None]) -> None:
        """Run ``work`` on a thread, then ``then`` on ``loop``; ``work`` waits in line when every thread is busy."""
        if self._closed:
            raise RuntimeError("the workers are closed")
        self._queue.put((work, loop, then))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_threads:
            # A daemon: an app whose lifespan never ran close() (a test, an embedding) must not keep its process
            # alive. sqlprobe itself closes them, after uvicorn has let the probes in flight finish.
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Drop the work still in line and let every thread end after its current work."""
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            work, loop, then = item
            try:
                work()
            except Exception as error:  # noqa: BLE001 - the thread must live on for the next work
                log.error("work on a %s thread failed unexpectedly: %s", self._name, where_it_failed(error))
            # Idle before waking the loop: work that "then" leads to finds this thread free, not a new one.
            self._idle.release()
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile (shutdown): nobody waits
                loop.call_soon_threadsafe(then)
