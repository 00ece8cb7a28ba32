"""Targets named by a DNS name whose name server never answers: their probes answer by their deadline, hold no
thread, and delay no other target's name (resolved from /etc/hosts meanwhile).

The served process gets a resolv.conf of its own (a mount namespace: `unshare --mount`) naming one name server on
loopback, a UDP socket of the test's that never answers. Needs root (port 53, the mount); skipped loudly otherwise.
"""

import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.faults.test_fault_suite import QUICK_SET
from tests.helpers import Samples, missing, parse_samples, target, value
from tests.served import Served, serve
from tests.servers import MariaDB

# More targets with silent names than asyncio's default executor has threads on any machine (at most 32).
SILENT_NAMES = 40
SILENT_SERVER = "127.0.0.2"
SCRAPE_TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}


@pytest.fixture
def silent_resolv_conf(tmp_path: Path) -> Iterator[Path]:
    """A resolv.conf whose only name server, on loopback, receives every question and answers none."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        missing("needs root and unshare (a mount namespace with a resolv.conf of its own)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as name_server:
        name_server.bind((SILENT_SERVER, 53))
        path = tmp_path / "resolv.conf"
        path.write_text(f"nameserver {SILENT_SERVER}\noptions timeout:30 attempts:1\n")
        yield path


def probe(served: Served, name: str) -> Samples:
    response = httpx.get(f"{served.url}/probe", params={"target": name}, headers=SCRAPE_TIMEOUT, timeout=30)
    assert response.status_code == 200, response.text
    return parse_samples(response.text)


@pytest.mark.xfail(
    strict=True,
    reason="names are resolved by getaddrinfo on asyncio's default executor (at most min(32, cores + 4) threads):"
    " a lookup that hangs holds its thread past the deadline, and the healthy target's lookup waits for one",
)
def test_probes_of_names_that_never_resolve_delay_no_other_target(
    tmp_path: Path, fleet: Sequence[MariaDB], silent_resolv_conf: Path
) -> None:
    server = fleet[0]
    # The healthy target by name: localhost, from /etc/hosts, which the name server is never asked about.
    healthy_dsn = server.dsn.replace("@127.0.0.1:", "@localhost:")
    lost = [f"lost-{index}" for index in range(SILENT_NAMES)]
    targets = {
        "healthy": target(healthy_dsn, "quick"),
        **{name: target(f"mysql+pymysql://exporter:x@{name}.example.test:3306/probe", "quick") for name in lost},
    }
    own_resolv_conf = f'mount --bind {silent_resolv_conf} /etc/resolv.conf && exec "$@"'
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", own_resolv_conf, "sh"]
    with serve(tmp_path / "served", targets, {"quick": QUICK_SET}, wrapper=wrapper) as served:
        with ThreadPoolExecutor(SILENT_NAMES) as pool:
            silent = list(pool.map(lambda name: probe(served, name), lost))
        # Every lost probe has answered (by its deadline); their names are still being asked about. The healthy
        # target's first probe: a new connection, to a name to resolve.
        healthy = probe(served, "healthy")
    assert {value(samples, "probe_success") for samples in silent} == {0.0}
    ((one,),) = server.query("select 1 as one")
    assert value(healthy, "probe_success") == 1.0
    assert value(healthy, "query_exporter_one") == float(one)
