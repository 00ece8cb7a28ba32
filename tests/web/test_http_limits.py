"""sqlprobe's HTTP is bounded before authentication: head size (431), head timeout (408), open connections (503)."""

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import bcrypt
import httpx2 as httpx
import pytest
import yaml

from tests.helpers import metric, parse_samples, target, value
from tests.served import Served, serve

SETS = {"one": {"one": metric("select 1 as v", "v")}}
MiB = 1024 * 1024
# The start of a request that never finishes its headers.
HALF_SENT = b"GET /probe?target=lite HTTP/1.1\r\nHost: sqlprobe\r\nX-Slow: "


@contextmanager
def _served(directory: Path, *options: str) -> Iterator[Served]:
    """sqlprobe serving one SQLite target, started with ``options``."""
    with serve(directory, {"lite": target(f"sqlite:///{directory}/lite.db", "one")}, SETS, *options) as running:
        yield running


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """sqlprobe with a 1 KiB head limit and a 1 s header timeout."""
    with _served(tmp_path_factory.mktemp("bounded"), "--max-header-size", "1KiB", "--header-timeout", "1s") as served:
        yield served


def _rss(served: Served) -> int:
    """The served process's resident set size, in bytes."""
    status = Path(f"/proc/{served.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


def _connect(served: Served) -> socket.socket:
    host, port = served.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _probe_succeeds(served: Served) -> bool:
    try:
        response = httpx.get(f"{served.url}/probe", params={"target": "lite"}, timeout=10)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and value(parse_samples(response.text), "probe_success") == 1.0


def _answer(connection: socket.socket) -> bytes:
    """What the server sent before closing the connection (b"" if it closed without a word)."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_an_unfinished_100_mib_header_is_cut_off_and_rss_stays_flat(served: Served) -> None:
    assert _probe_succeeds(served)  # a first probe: what it allocates is not the header's doing
    before = peak = _rss(served)
    sent = 0
    with _connect(served) as connection:
        connection.sendall(HALF_SENT)
        chunk = b"a" * MiB
        try:
            while sent < 100 * MiB:
                connection.sendall(chunk)
                sent += len(chunk)
                peak = max(peak, _rss(served))
        except (BrokenPipeError, ConnectionResetError):
            pass  # sqlprobe closed the connection: what it wanted
    peak = max(peak, _rss(served))
    assert sent < 100 * MiB, "sqlprobe read the whole 100 MiB header"
    assert peak - before < 8 * MiB
    assert _probe_succeeds(served)


def test_a_head_over_the_limit_gets_431_with_a_sentence(served: Served) -> None:
    small = httpx.get(f"{served.url}/-/healthy", headers={"X-Fill": "a" * 600})
    large = httpx.get(f"{served.url}/-/healthy", headers={"X-Fill": "a" * 1100})
    assert small.status_code == 200
    assert (large.status_code, large.text) == (431, "the request line and headers are larger than 1024 bytes\n")


def test_the_head_limit_is_per_request_not_per_keep_alive_connection(served: Served) -> None:
    # Twenty requests of 600 bytes of headers each on one connection: 12 KiB in all, each within 1 KiB.
    with httpx.Client(base_url=served.url) as client:
        statuses = [client.get("/-/healthy", headers={"X-Fill": "a" * 600}).status_code for _ in range(20)]
    assert statuses == [200] * 20


def test_pipelined_requests_arriving_together_are_each_held_to_the_limit_not_their_sum(served: Served) -> None:
    request = b"GET /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\nX-Fill: " + b"a" * 600 + b"\r\n\r\n"
    with _connect(served) as connection:
        connection.sendall(request + request + request[:-2] + b"Connection: close\r\n\r\n")
        answer = _answer(connection)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_300_half_sent_requests_are_closed_after_the_header_timeout_while_probes_are_served(served: Served) -> None:
    with ExitStack() as stack:
        connections = [stack.enter_context(_connect(served)) for _ in range(300)]
        for index, connection in enumerate(connections):
            if index % 2:  # half of them send nothing at all
                connection.sendall(HALF_SENT)
        assert _probe_succeeds(served)
        assert httpx.get(f"{served.url}/-/healthy").status_code == 200
        # Well past the timeout, on a loaded machine; without one they would stay open for good.
        answers = {_answer(connection) for connection in connections}
    sentence = b"the request's headers did not arrive within 1s\n"
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.1 408 Request Timeout"}
    assert all(answer.endswith(sentence) for answer in answers)


def test_a_client_trickling_its_headers_is_closed_after_the_header_timeout(served: Served) -> None:
    with _connect(served) as connection:
        connection.sendall(HALF_SENT)
        started = time.monotonic()
        try:
            # One byte every 100 ms keeps a plain read timeout from ever expiring; 10 s at most.
            while time.monotonic() - started < 10:
                connection.sendall(b"a")
                time.sleep(0.1)
            closed = False
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed


def test_connections_beyond_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    with _served(tmp_path, "--max-connections", "20", "--header-timeout", "30s") as served, ExitStack() as stack:
        # Twenty idle connections reach the cap (the readiness check's own one is closed by then, or it is one).
        held = [stack.enter_context(_connect(served)) for _ in range(20)]
        extra = stack.enter_context(_connect(served))
        answer = _answer(extra)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert answer.endswith(b"sqlprobe has 20 connections open already\n")
        for connection in held:
            connection.close()
        # Once they are gone, clients are served again.
        deadline = time.monotonic() + 10
        while not _probe_succeeds(served) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _probe_succeeds(served)


def test_the_limits_apply_before_basic_authentication(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    options = ("--web-config", str(tmp_path / "web.yml"), "--max-header-size", "1KiB", "--header-timeout", "1s")
    targets = {"lite": target(f"sqlite:///{tmp_path}/lite.db", "one")}
    with (
        httpx.Client(auth=("prometheus", "right")) as authenticated,
        serve(tmp_path, targets, SETS, *options, client=authenticated) as served,
    ):
        assert httpx.get(f"{served.url}/-/healthy").status_code == 401
        # No credentials at all, and still the head's size and time are bounded, not left to authentication.
        assert httpx.get(f"{served.url}/-/healthy", headers={"X-Fill": "a" * 1100}).status_code == 431
        with _connect(served) as connection:
            connection.sendall(HALF_SENT)
            assert _answer(connection).startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_the_next_head_on_a_keep_alive_connection_is_held_to_the_limit_when_it_arrives_in_one_read(
    served: Served,
) -> None:
    large = b"GET /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\nX-Fill: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n"
    with _connect(served) as connection:
        connection.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        connection.sendall(large)  # 8 KiB of head, after the first request was answered
        answer = _answer(connection)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_a_head_arriving_in_the_same_read_as_the_previous_requests_body_is_held_to_the_limit(served: Served) -> None:
    large = b"GET /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\nX-Fill: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n"
    with _connect(served) as connection:
        connection.sendall(b"POST /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.3)  # the head is taken in first; its body and the next head then come in one read
        connection.sendall(b"hello" + large)
        answer = _answer(connection)
    assert b"HTTP/1.1 431 Request Header Fields Too Large\r\n" in answer


@pytest.mark.parametrize(
    ("head", "byte"),
    [
        (b"POST /-/reload HTTP/1.1\r\nHost: sqlprobe\r\nContent-Length: 100000\r\n\r\n", b"a"),
        (b"GET /-/healthy HTTP/1.1\r\nHost: sqlprobe\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\na\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_a_client_trickling_its_body_is_closed_after_the_header_timeout(
    served: Served, head: bytes, byte: bytes
) -> None:
    with _connect(served) as connection:
        connection.sendall(head)
        started = time.monotonic()
        try:
            # A byte every 200 ms keeps uvicorn's keep-alive timeout from expiring; 10 s at most (the timeout is 1 s).
            while time.monotonic() - started < 10:
                connection.sendall(byte)
                time.sleep(0.2)
            closed = False
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed
