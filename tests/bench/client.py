"""A cheap HTTP/1.1 keep-alive client on asyncio streams, just enough to probe sqlprobe the way Prometheus does."""

import asyncio
import re
import time
from dataclasses import dataclass, field

# What Prometheus 2.x sends: OpenMetrics preferred, the text format accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROBE_SUCCESS = re.compile(rb"^probe_success (\S+)", re.MULTILINE)


class ProtocolError(Exception):
    """The answer was not HTTP/1.1 as expected."""


def probe_request(host: str, port: int, target: str, scrape_timeout: float) -> bytes:
    """The bytes of one `GET /probe?target=…` as Prometheus sends it."""
    return (
        f"GET /probe?target={target} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"User-Agent: sqlprobe-bench\r\n"
        f"Accept: {PROMETHEUS_ACCEPT}\r\n"
        f"X-Prometheus-Scrape-Timeout-Seconds: {scrape_timeout:g}\r\n"
        "\r\n"
    ).encode()


@dataclass
class Connection:
    """One keep-alive connection, opened on first use and again after the server or a timeout closed it."""

    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``; return the answer's status and body."""
        reused = self.writer is not None
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as error:
            # The server closed an idle keep-alive connection (uvicorn does after 5 s) as we sent on it:
            # Prometheus (Go's HTTP client) sends again on a new one, and so do we.
            if not reused or (isinstance(error, asyncio.IncompleteReadError) and error.partial):
                raise
            self.close()
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        if not status_line.startswith(b"HTTP/1.1 "):
            raise ProtocolError(f"unexpected status line {status_line[:60]!r}")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in header_block.split(b"\r\n") if line)
        }
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._chunked()
        else:
            raise ProtocolError("answer with neither Content-Length nor chunked encoding")
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return int(status_line[9:12]), body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        chunks = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")  # no trailers expected: the empty line after the last chunk
        return b"".join(chunks)

    def close(self) -> None:
        """Drop the connection; the next exchange opens a new one."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One probe as the load generator saw it."""

    finished: float  # time.monotonic() when the answer was complete
    latency: float  # seconds from sending the request to the complete answer
    failure: str | None  # None for a probe with HTTP 200 and probe_success 1, else why not


@dataclass
class Probes:
    """Probes sqlprobe over one keep-alive connection and keeps what happened."""

    connection: Connection
    timeout: float
    outcomes: list[Outcome] = field(default_factory=list)

    async def probe(self, request: bytes) -> None:
        """Send one probe request and record its outcome; never raises for a failed probe."""
        start = time.monotonic()
        failure: str | None
        try:
            async with asyncio.timeout(self.timeout):
                status, body = await self.connection.exchange(request)
        except TimeoutError:
            failure = "timeout"
            self.connection.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as error:
            failure = f"connection: {type(error).__name__}"
            self.connection.close()
        else:
            failure = _failure(status, body)
        end = time.monotonic()
        self.outcomes.append(Outcome(end, end - start, failure))


def _failure(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"http {status}"
    match = PROBE_SUCCESS.search(body)
    if match is None:
        return "no probe_success"
    return None if float(match.group(1)) == 1 else "probe_success 0"
