"""KILL QUERY sent only where the statement runs, deduplicated, bounded in number, dropped once too late.

Behind a proxy or load balancer (ProxySQL, HAProxy in front of Galera) the separate connection that sends KILL
QUERY may land on another backend, where the same connection id is someone else's session. So each connection
notes, when it is made, which server it reached and its id there (one query); a KILL goes out only over a
connection that reports the same server, and otherwise the probe's connection is discarded instead.
"""

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# MariaDB has no @@server_uuid (MySQL has): the host name and port the server itself reports name it on both,
# whatever address, proxy or port forward the client went through.
IDENTITY_SQL = "select @@hostname as host, @@port as port, connection_id() as id"
# Kills waiting for a killer; more are refused (counted) rather than queued behind a partition.
MAX_PENDING = 32
KILLERS = 2
# A kill not started this long after it was asked for is dropped: the probe's connection was closed long before
# (0.5 s after its deadline), and a statement stopped seconds late helps nobody.
MAX_KILL_DELAY = 5.0


@dataclass(frozen=True, slots=True)
class Identity:
    """The server a connection reached, as that server names itself, and the connection's id on it."""

    server: tuple[str, int]
    connection_id: int


async def read_identity(fetch: Callable[[Any, str], Awaitable[Any]], dbapi_connection: Any) -> Identity | None:
    """Ask the server over ``dbapi_connection`` who it is; None if the answer is not one."""
    fetched = await fetch(dbapi_connection, IDENTITY_SQL)
    if fetched is None or len(fetched[1]) != 1:
        return None
    host, port, connection_id = fetched[1][0]
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    try:
        return Identity((str(host), int(port)), int(connection_id))
    except (TypeError, ValueError):
        return None


class KillSkipped(Exception):
    """The kill was not sent; ``reason`` is the label of sqlprobe_kill_skipped_total."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Request:
    target: str
    connection_id: int | None
    kill: Callable[[], Awaitable[None]]  # sends the KILL, or raises KillSkipped
    discard: Callable[[], object]  # gives up on the probe's connection instead
    scrub: Callable[[str], str]  # stars the target's password, never to be logged (Target.scrubbed)
    asked_at: float


class Killer:
    """Sends kills as tasks on the event loop: at most KILLERS at once, MAX_PENDING waiting, one per connection,
    none too late. A kill waits on the network, never on a thread."""

    def __init__(self) -> None:
        self._pending: OrderedDict[int, _Request] = OrderedDict()  # by id() of the driver connection
        self._running: set[int] = set()
        self._skipped: Counter[str] = Counter()
        self._killers: set[asyncio.Task[None]] = set()
        self._closed = False

    def skipped(self) -> Mapping[str, int]:
        """Kills not sent, by reason, since start."""
        return dict(self._skipped)

    def request(
        self,
        key: Any,
        target: str,
        connection_id: int | None,
        kill: Callable[[], Awaitable[None]],
        discard: Callable[[], object],
        scrub: Callable[[str], str] = str,
    ) -> None:
        """Ask for ``kill`` of the statement on driver connection ``key``; returns at once (call it on the loop)."""
        if self._closed or id(key) in self._pending or id(key) in self._running:
            return  # one kill per connection is enough
        request = _Request(target, connection_id, kill, discard, scrub, time.monotonic())
        if len(self._pending) >= MAX_PENDING:
            self._skip(request, "queue_full")
            return
        self._pending[id(key)] = request
        if len(self._killers) < KILLERS:
            task = asyncio.get_running_loop().create_task(self._serve())
            self._killers.add(task)
            task.add_done_callback(self._killers.discard)

    async def close(self, timeout: float) -> None:
        """Take no more; send what was asked for (too late ones dropped as ever), for ``timeout`` seconds at most.

        At shut-down a statement given up on just before is still stopped on the server: once the process is gone,
        nothing else would stop it (a lock wait, a long scan go on after their client is gone).
        """
        self._closed = True
        if self._killers:
            _, unfinished = await asyncio.wait(self._killers, timeout=timeout)
            for task in unfinished:
                task.cancel()
        self._pending.clear()

    async def _serve(self) -> None:
        while self._pending:
            key, request = self._pending.popitem(last=False)
            if time.monotonic() - request.asked_at > MAX_KILL_DELAY:
                self._skip(request, "too_late")
                continue
            self._running.add(key)
            try:
                await request.kill()
            except KillSkipped as skipped:
                self._skip(request, skipped.reason)
            except Exception as error:  # noqa: BLE001 - a kill that fails must not end the killer
                log.warning(
                    "could not stop the running query of target %s (connection id %s): %s",
                    request.target,
                    request.connection_id,
                    failure_reason(error, request.scrub),
                    extra={"event": "kill_failed", "target": request.target, "connection_id": request.connection_id},
                )
            finally:
                self._running.discard(key)

    def _skip(self, request: _Request, reason: str) -> None:
        """Count a kill not sent and discard the probe's connection instead."""
        self._skipped[reason] += 1
        log.info(
            "query of target %s (connection id %s) not killed (%s): its connection is discarded",
            request.target,
            request.connection_id,
            reason,
            extra={"event": "kill_skipped", "target": request.target, "reason": reason},
        )
        request.discard()


def failure_reason(error: Exception, scrub: Callable[[str], str]) -> str:
    """The driver's code and message (the user and host at most, and never the password), or the error's type."""
    args: tuple[Any, ...] = getattr(error, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        reason = f"{type(error).__name__} ({args[0]}, {args[1]})"
        return scrub(reason)
    return type(error).__name__
