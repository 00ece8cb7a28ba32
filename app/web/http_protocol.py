"""uvicorn's httptools protocol, bounded before any app code runs, with its writes of one loop turn sent together.

Bounds (uvicorn has none of them for httptools): a request's head (request line and headers) larger than
``max_header_bytes`` is answered 431, one not complete within ``header_timeout`` seconds is answered 408, and a
connection beyond ``max_connections`` open ones is answered 503; each then closed. All of this happens before
authentication (basic auth is app code), so an unauthenticated client cannot make sqlprobe buffer more than a
head's worth, nor hold a connection longer than the timeout without sending a whole request.

uvicorn writes an answer's status line and headers when the app starts the response, then its body, and uvloop
sends each write at once: two system calls and two TCP segments per probe. On loopback, where Prometheus
usually scrapes from next door, each segment's delivery is charged to the writer too. Joining the writes of
one loop turn (a write waits for the end of the turn at most) sends the answer in one.
"""

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # a uvicorn without it: internals.py says so, and sqlprobe serves with uvicorn's stock protocol
    HttpToolsProtocol = asyncio.Protocol  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

# The ASGI scope's extension that tells when the request began to arrive: {"monotonic": time.monotonic()}.
ARRIVED = "sqlprobe.arrived"
# The ASGI scope's extension that tells when the client has gone: {"future": an asyncio future, done then}. uvicorn
# says so only to an app that calls receive() and waits for http.disconnect, a task per request; a future per
# connection, done in connection_lost, costs /probe nothing while the client stays.
GONE = "sqlprobe.gone"

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 5.0
# Prometheus keeps a connection open per target it scrapes here: two of them scraping 2,000 targets hold 4,000.
DEFAULT_MAX_CONNECTIONS = 4096
# Rejections are logged at most this often (seconds), with how many there were: a flood is one line a minute.
_LOG_EVERY = 60.0
# Linux's struct tcp_info (linux/tcp.h): tcpi_last_data_recv, milliseconds since data last arrived, at this offset.
_TCP_INFO_SIZE = 104
_LAST_DATA_RECV = 52


def since_data_arrived(sock: Any) -> float:
    """Seconds since the kernel last received data on ``sock`` (a TCP socket; 0.0 where it cannot tell).

    Under a burst of requests the event loop reads a request well after it reached the machine: 1.5 s after, for the
    last of 2,000 sent within a second on a loaded 2-core machine. The client's timeout runs from when it sent.
    """
    if sock is None or getattr(socket, "TCP_INFO", None) is None:
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError, TypeError):
        return 0.0  # not TCP (a Unix socket), or not Linux
    if len(info) < _LAST_DATA_RECV + 4:
        return 0.0
    (milliseconds,) = struct.unpack_from("<I", info, _LAST_DATA_RECV)
    return float(milliseconds) / 1000.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may cost sqlprobe before its request reaches the app."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class _Rejections:
    """Counts rejected requests by reason, and logs them now and then rather than once each."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._logged = -_LOG_EVERY

    def add(self, reason: str) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            counts = ", ".join(f"{count} {name}" for name, count in sorted(self._counts.items()))
            log.warning(
                "HTTP requests rejected before reaching sqlprobe since the last such line: %s",
                counts,
                extra={"event": "http_rejected", "rejected": dict(self._counts)},
            )
            self._counts.clear()


_REJECTED = {
    408: (b"408 Request Timeout", "header_timeout", "the request's headers did not arrive within {timeout:g}s"),
    431: (
        b"431 Request Header Fields Too Large",
        "header_too_large",
        "the request line and headers are larger than {size} bytes",
    ),
    503: (b"503 Service Unavailable", "too_many_connections", "sqlprobe has {connections} connections open already"),
}


_BODY_TIMEOUT = (b"408 Request Timeout", "body_timeout", "the request's body did not arrive within {timeout:g}s")


def http_protocol(limits: HttpLimits) -> type["HttpProtocol"]:
    """The protocol class for uvicorn's ``http`` setting, bounded by ``limits``."""

    class BoundedHttpProtocol(HttpProtocol):
        pass

    BoundedHttpProtocol.limits = limits
    BoundedHttpProtocol.rejections = _Rejections()
    return BoundedHttpProtocol


class HttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol bounded by ``limits``, on a transport that joins the writes of one event-loop turn."""

    limits = HttpLimits()
    rejections = _Rejections()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0  # of the request being received, while its headers are not complete
        self._in_head = True  # also between requests: the next bytes are the next request's head
        self._in_request = True  # until the request's body, if any, has arrived whole
        self._heads = 0  # request heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._gone: asyncio.Future[None] = loop.create_future()
        self._socket = transport.get_extra_info("socket")
        super().connection_made(_JoinedWrites(transport, loop))
        if len(self.connections) > self.limits.max_connections:
            self._reject(503)
            return
        self._arm_head_timer()  # a connection that sends nothing is dropped too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)
        if not self._gone.done():
            self._gone.set_result(None)  # a probe still running for this connection gives up

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            super().data_received(data)
            return
        limit = self.limits.max_header_bytes
        while data:
            if self._in_head:
                # Only as much as a head may take: if the headers end in it, the rest is the body or the next request.
                room = limit - self._head_bytes
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
                heads = self._heads
                super().data_received(piece)
                if data and self._heads == heads and not self.transport.is_closing():
                    self._reject(431)
            else:
                # A body, and perhaps the next request's head after it in the same read: fed a head's worth at a
                # time, so that such a head is counted from the next piece on, not let through with the body.
                piece, data = data[:limit], data[limit:]
                super().data_received(piece)
            if self.transport.is_closing():
                return

    def on_message_begin(self) -> None:
        self._in_head = True
        self._in_request = True
        self._arm_head_timer()
        super().on_message_begin()
        # When the request reached the machine: a probe's deadline counts from there, not from when its handler got
        # to run, nor from when the loop read it (under a burst of scrapes, requests wait their turn on the event
        # loop and in the socket, and Prometheus's timeout runs). The kernel says when the data came.
        extensions = dict(self.scope.get("extensions") or {})
        extensions[ARRIVED] = {"monotonic": time.monotonic() - since_data_arrived(self._socket)}
        extensions[GONE] = {"future": self._gone}
        self.scope["extensions"] = extensions

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The timer runs on until the body has arrived too: a body trickled a byte at a time holds a connection
        # (and one of --max-connections) as long as trickled headers would. What comes next is a new head, counted.
        self._in_request = False
        self._in_head = True
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_message_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_request or self.transport.is_closing():
            return
        if self._in_head:
            self._reject(408)
        elif self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # answered already (sqlprobe reads no bodies): no second status line
        else:
            self._reject(408, "body")

    def _reject(self, status: int, part: str = "head") -> None:
        """Answer ``status`` with a sentence and close the connection (its request never reaches the app)."""
        self._disarm_head_timer()
        status_line, reason, sentence = _REJECTED[status] if part == "head" else _BODY_TIMEOUT
        body = (
            sentence.format(
                timeout=self.limits.header_timeout,
                size=self.limits.max_header_bytes,
                connections=self.limits.max_connections,
            )
            + "\n"
        ).encode()
        self.rejections.add(reason)
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status_line, len(body), body)
        )
        self.transport.close()


class _JoinedWrites(asyncio.Transport):
    """A transport that holds writes until the end of the loop's turn, then sends them as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def _flush(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()  # what was written goes out before the connection closes, as with asyncio's close()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self._held)) + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()
