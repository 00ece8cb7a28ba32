"""The probes' worker threads: bounded, reused, and always waking the event loop when a piece of work ends."""

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from app.workers import Workers


def test_work_beyond_the_thread_bound_waits_in_line_and_every_piece_wakes_the_loop() -> None:
    max_threads, pieces = 3, 10
    release = threading.Event()
    running_at_once: list[int] = []
    running = 0
    lock = threading.Lock()

    def blocking() -> None:
        nonlocal running
        with lock:
            running += 1
            running_at_once.append(running)
        release.wait(10)
        with lock:
            running -= 1

    async def scenario(workers: Workers) -> list[int]:
        loop = asyncio.get_running_loop()
        landed: list[int] = []
        everything = loop.create_future()

        def then() -> None:
            landed.append(threading.get_ident())
            if len(landed) == pieces:
                everything.set_result(None)

        for _ in range(pieces):
            workers.submit(blocking, loop, then)
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.wait_for(everything, 10)
        return landed

    workers = Workers(max_threads, "test")
    try:
        landed = asyncio.run(scenario(workers))
        threads = [thread for thread in threading.enumerate() if thread.name.startswith("test-")]
    finally:
        workers.close()
    assert max(running_at_once) == max_threads
    assert len(running_at_once) == pieces
    assert set(landed) == {threading.get_ident()}  # every "then" ran on the event loop's thread
    assert len(threads) == max_threads


async def _run_one(workers: Workers, work: Callable[[], None]) -> None:
    """Run ``work`` on the workers and wait until it has woken the loop."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    workers.submit(work, loop, lambda: done.set_result(None))
    await asyncio.wait_for(done, 10)


def test_idle_threads_are_reused_instead_of_starting_new_ones() -> None:
    async def scenario(workers: Workers) -> None:
        for _ in range(20):  # one at a time: the one thread is idle again before the next piece
            await _run_one(workers, lambda: None)

    assert len(_threads_started_by(scenario)) == 1


def test_with_several_idle_threads_the_last_one_to_finish_takes_each_piece() -> None:
    ran_on: list[str] = []

    async def scenario(workers: Workers) -> None:
        release = threading.Event()

        def hold() -> None:
            release.wait()

        # Three pieces at once start three threads; once released, they become idle one after another.
        await asyncio.gather(*(_run_one(workers, hold) for _ in range(3)), _release_soon(release))
        for _ in range(20):  # then one at a time
            await _run_one(workers, lambda: ran_on.append(threading.current_thread().name))

    assert len(_threads_started_by(scenario)) == 3
    assert len(ran_on) == 20
    assert len(set(ran_on)) == 1  # the same thread every time: the others are never woken


def _threads_started_by(scenario: Callable[[Workers], Coroutine[Any, Any, None]]) -> list[threading.Thread]:
    """Run ``scenario`` on workers of up to 8 threads; the threads they started, alive at its end."""
    workers = Workers(8, "counted")
    try:
        asyncio.run(scenario(workers))
        return [thread for thread in threading.enumerate() if thread.name.startswith("counted-")]
    finally:
        workers.close()


async def _release_soon(release: threading.Event) -> None:
    await asyncio.sleep(0.2)
    release.set()


def test_work_that_raises_still_wakes_the_loop_and_logs_no_message_text(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-in-an-exception"

    def failing() -> None:
        raise ValueError(secret)

    async def scenario(workers: Workers) -> int:
        landed = 0
        for work in (failing, lambda: None):  # the thread serves the next piece after the failure
            await _run_one(workers, work)
            landed += 1
        return landed

    workers = Workers(1, "failing")
    try:
        with caplog.at_level(logging.ERROR, logger="app.workers"):
            landed = asyncio.run(scenario(workers))
    finally:
        workers.close()
    assert landed == 2
    assert [record.getMessage().split(": ", 1)[1].split(" at ")[0] for record in caplog.records] == ["ValueError"]
    assert secret not in caplog.text


def test_closed_workers_refuse_work_and_their_threads_end() -> None:
    workers = Workers(2, "closing")
    asyncio.run(_run_one(workers, lambda: None))
    workers.close()
    for thread in [thread for thread in threading.enumerate() if thread.name.startswith("closing-")]:
        thread.join(10)
        assert not thread.is_alive()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="closed"):
            workers.submit(lambda: None, loop, lambda: None)
    finally:
        loop.close()


def test_workers_never_closed_do_not_keep_the_process_alive() -> None:
    program = (
        "import asyncio\n"
        "from app.workers import Workers\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    done = loop.create_future()\n"
        "    Workers(2, 'forgotten').submit(lambda: None, loop, lambda: done.set_result(None))\n"
        "    await done\n"
        "asyncio.run(main())\n"
        "print('ran')\n"
    )
    finished = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True)
    assert finished.stdout == "ran\n"
