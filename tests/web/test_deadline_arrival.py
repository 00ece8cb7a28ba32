"""A probe's deadline counts from when its request began to arrive, as Prometheus's scrape timeout does."""

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import Samples, metric, parse_samples, target, value
from tests.served import Served, serve
from tests.servers import silent_listener

SCRAPE_TIMEOUT = 3.0
HEAD_TAKES = 1.0  # seconds between the request's first bytes and the end of its head


def test_a_probe_whose_request_head_arrived_slowly_answers_by_the_deadline_counted_from_its_first_bytes(
    tmp_path: Path,
) -> None:
    with hung_target_served(tmp_path) as (_, client):
        sent = time.monotonic()
        client.sendall(b"GET /probe?target=hung HTTP/1.1\r\nHost: sqlprobe\r\n")
        time.sleep(HEAD_TAKES)
        client.sendall(f"X-Prometheus-Scrape-Timeout-Seconds: {SCRAPE_TIMEOUT:g}\r\nConnection: close\r\n\r\n".encode())
        samples, received = _answer(client)
    assert value(samples, "probe_success") == 0.0
    # Before Prometheus's timeout, counted from the first bytes it sent: had the deadline been counted from the end
    # of the head, the answer would have come a second later, after Prometheus had given up.
    assert received - sent < SCRAPE_TIMEOUT, received - sent


STOPPED = 1.5  # seconds sqlprobe's process is stopped (SIGSTOP) just after the request reached the machine


def test_a_probe_read_late_by_a_stopped_process_answers_by_the_deadline_counted_from_when_it_reached_the_machine(
    tmp_path: Path,
) -> None:
    with hung_target_served(tmp_path) as (served, client):
        # A stalled event loop (a long pause, a starved CPU, a burst of requests ahead of this one) reads the
        # request late; made for real by stopping the process while the request waits in its socket.
        os.kill(served.process.pid, signal.SIGSTOP)
        try:
            sent = time.monotonic()
            client.sendall(
                b"GET /probe?target=hung HTTP/1.1\r\nHost: sqlprobe\r\nConnection: close\r\n"
                + f"X-Prometheus-Scrape-Timeout-Seconds: {SCRAPE_TIMEOUT:g}\r\n\r\n".encode()
            )
            time.sleep(STOPPED)
        finally:
            os.kill(served.process.pid, signal.SIGCONT)
        samples, received = _answer(client)
    assert value(samples, "probe_success") == 0.0
    # Before Prometheus's timeout, counted from when it sent: had the deadline been counted from when the loop read
    # the request, the answer would have come 1.5 s later, after Prometheus had given up.
    assert received - sent < SCRAPE_TIMEOUT, received - sent


@contextmanager
def hung_target_served(tmp_path: Path) -> Iterator[tuple[Served, socket.socket]]:
    """sqlprobe serving one target whose host accepts and never answers, and a client connection to it."""
    with silent_listener() as port:
        targets = {"hung": target(f"mysql+pymysql://u:p@127.0.0.1:{port}/", "one")}
        with serve(tmp_path, targets, {"one": {"one": metric("select 1 as one", "one")}}) as served:
            host, http_port = served.url.removeprefix("http://").rsplit(":", 1)
            with socket.create_connection((host, int(http_port))) as client:
                yield served, client


def _answer(client: socket.socket) -> tuple[Samples, float]:
    """The samples of the answer read to its end (sqlprobe closes: Connection: close), and when it ended."""
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    return parse_samples(answer.partition(b"\r\n\r\n")[2].decode()), time.monotonic()
