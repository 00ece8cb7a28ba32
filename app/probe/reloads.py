"""Reload requests that arrive together share runs: twenty at once cost two loads, not twenty."""

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

_Result = TypeVar("_Result")


class SharedRuns(Generic[_Result]):
    """Runs ``work`` on a worker thread; calls that arrive while it runs share the next run and its answer.

    The next, not the running one: an answer must see the files as they were when its request arrived.
    """

    def __init__(self, work: Callable[[], _Result]) -> None:
        self._work = work
        self._running: asyncio.Task[_Result] | None = None
        self._queued: asyncio.Task[_Result] | None = None  # to run after the running one, shared meanwhile

    async def __call__(self) -> _Result:
        if self._queued is None:
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(asyncio.to_thread(self._work))
                return await asyncio.shield(self._running)
            self._queued = asyncio.create_task(self._after(self._running))
        # Shielded: a client that goes away does not cancel the run the others wait for.
        return await asyncio.shield(self._queued)

    async def _after(self, running: "asyncio.Task[_Result]") -> _Result:
        await asyncio.wait([running])
        self._running, self._queued = self._queued, None
        return await asyncio.to_thread(self._work)
