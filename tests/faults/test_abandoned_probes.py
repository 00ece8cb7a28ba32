"""Probes whose client has gone: the served process stops them, and a flood of them costs a bounded amount.

An attacker (or a Prometheus restarting) sends requests and closes each connection at once; before #25 each probe
ran on to its deadline, its statement on the server too, and a flood of them took every file descriptor.
"""

import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2 as httpx

from tests.faults.test_fault_suite import thread_count
from tests.helpers import metric, target, wait_until
from tests.served import Served, serve
from tests.servers import EXPORTER_USER, MariaDB

SLEEP_SQL = "select sleep(15) as slept"
HUNG_SET = {"one": metric("select 1 as one", "one")}


def _request(served: Served, path: str, scrape_timeout: str = "20") -> socket.socket:
    """A raw HTTP/1.1 GET of ``path`` sent on a new loopback connection, left open; the socket."""
    host, port = served.url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=5)
    client.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Prometheus-Scrape-Timeout-Seconds: {scrape_timeout}\r\n\r\n".encode()
    )
    return client


def _sleeping(server: MariaDB) -> int:
    """Sessions of sqlprobe's user on ``server`` running the probe's sleep now."""
    rows = server.root_query(
        f"select count(*) from information_schema.processlist where user = '{EXPORTER_USER}' "
        "and info like 'select sleep(15)%'"
    )
    return int(rows[0][0])


def _module(ports: Sequence[int]) -> dict[str, object]:
    """A module allowed to probe the hung ports (an allow entry per port, as docs/modules.md says)."""
    allow = [f"127.0.0.1:{port}" for port in ports]
    return {"m": {"dsn": "mysql+pymysql://u:p@{address}/probe", "query_sets": ["hung"], "allow": allow}}


def _descriptors(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def _rss_kib(pid: int) -> int:
    found = re.search(r"^VmRSS:\s+(\d+) kB$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert found is not None
    return int(found[1])


@contextmanager
def _hung_hosts(count: int) -> Iterator[Sequence[int]]:
    """``count`` loopback ports whose connects succeed (the kernel's accept queue) and that never send a byte."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            listener = stack.enter_context(socket.socket())
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            ports.append(listener.getsockname()[1])
        yield ports


def test_a_probe_whose_client_leaves_has_its_statement_killed_on_the_server(
    tmp_path: Path, fleet: list[MariaDB]
) -> None:
    server = fleet[0]
    with serve(
        tmp_path, {"slow": target(server.dsn, "slow", timeout="20s")}, {"slow": {"slept": metric(SLEEP_SQL, "slept")}}
    ) as served:
        client = _request(served, "/probe?target=slow")
        assert wait_until(lambda: _sleeping(server) == 1, 5), "the probe's statement never started"
        time.sleep(1)
        client.close()
        left = time.monotonic()
        stopped = wait_until(lambda: _sleeping(server) == 0, 5)
        took = time.monotonic() - left
        # The issue allows ~2 s; the margin is for a loaded 2-core machine. Before, it ran its whole 15 s.
        assert stopped, "the statement still ran 5 s after its client left"
        assert took < 3, f"the statement still ran {took:.1f}s after its client left"
        # sqlprobe serves on: the next probe of the target starts and answers.
        response = httpx.get(
            f"{served.url}/probe",
            params={"target": "slow"},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"},
            timeout=10,
        )
        assert response.status_code == 200
        assert "Traceback" not in served.log.read_text()


def test_a_flood_of_abandoned_probes_of_hung_module_targets_leaves_descriptors_and_threads_at_baseline(
    tmp_path: Path,
) -> None:
    with _hung_hosts(250) as ports, serve(tmp_path, {}, {"hung": HUNG_SET}, modules=_module(ports)) as served:
        pid = served.process.pid
        # One probe answered first, so the baseline holds what a served process has once it has probed.
        warm = httpx.get(
            f"{served.url}/probe", params={"module": "m", "target": f"127.0.0.1:{ports[0]}"},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"}, timeout=10,
        )  # fmt: skip
        assert warm.status_code == 200
        descriptors, threads, rss = _descriptors(pid), thread_count(pid), _rss_kib(pid)
        sent, started = 0, time.monotonic()
        for _ in range(2):  # each hung host twice: 500 requests, every one closed as soon as it is sent
            for port in ports:
                _request(served, f"/probe?module=m&target=127.0.0.1:{port}").close()
                sent += 1
            if time.monotonic() - started > 60:
                break
        assert sent >= 250
        # Each probe's deadline is 10 s: before #25 every one held its socket to a hung host until then.
        settled = wait_until(lambda: _descriptors(pid) <= descriptors + 10, 3)
        assert settled, f"{_descriptors(pid)} descriptors after the flood of {sent}, {descriptors} before"
        assert thread_count(pid) <= threads + 2
        print(f"flood of {sent}: descriptors {descriptors} -> {_descriptors(pid)}, RSS {rss} -> {_rss_kib(pid)} KiB")
        # sqlprobe still serves.
        assert httpx.get(f"{served.url}/-/ready", timeout=10).status_code == 200


def test_probes_beyond_a_modules_bound_in_flight_are_answered_503_with_a_sentence(tmp_path: Path) -> None:
    with (
        _hung_hosts(4) as ports,
        serve(tmp_path, {}, {"hung": HUNG_SET}, "--max-module-probes-in-flight", "3", modules=_module(ports)) as served,
    ):
        held = [_request(served, f"/probe?module=m&target=127.0.0.1:{port}") for port in ports[:3]]
        try:
            time.sleep(0.5)  # the three are in flight (their deadline is 10 s)
            refused = httpx.get(
                f"{served.url}/probe", params={"module": "m", "target": f"127.0.0.1:{ports[3]}"}, timeout=10
            )
            assert refused.status_code == 503
            assert refused.text == (
                "module 'm' has 3 probes in flight already, its bound (--max-module-probes-in-flight): "
                "try again later\n"
            )
        finally:
            for client in held:
                client.close()

        # Their clients gone, the three stop at once and free their places.
        def admitted() -> bool:
            response = httpx.get(
                f"{served.url}/probe", params={"module": "m", "target": f"127.0.0.1:{ports[3]}"},
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"}, timeout=10,
            )  # fmt: skip
            return response.status_code == 200

        assert wait_until(admitted, 3)
