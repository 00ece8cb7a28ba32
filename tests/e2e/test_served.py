"""sqlprobe started as a user starts it, probed over real HTTP, many probes at once."""

import asyncio
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.helpers import ITEMS_SET, parse_samples, target, value
from tests.served import Served, serve
from tests.servers import MariaDB

SLEEP_SECONDS = 1.0
PARALLEL_PROBES = 8
SETS = {
    "items": ITEMS_SET,
    "sleepy": {
        "nap": {
            "query": f"select sleep({SLEEP_SECONDS}) as slept",
            "type": "gauge",
            "description": "d",
            "value": "slept",
        }
    },
}


def fleet_targets(fleet: Sequence[MariaDB], silent_port: int, timeout: str = "10s") -> dict[str, Any]:
    """Every fleet server, plus a "hung" target on a port that accepts TCP and never answers."""
    targets = {server.name: target(server.dsn, "items", "sleepy") for server in fleet}
    targets["hung"] = target(f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/", "items", timeout=timeout)
    return targets


@pytest.fixture
def served(tmp_path: Path, fleet: Sequence[MariaDB], silent_port: int) -> Iterator[Served]:
    """sqlprobe serving the fleet and a hung target, as a user starts it."""
    with serve(tmp_path, fleet_targets(fleet, silent_port), SETS) as running:
        yield running


def test_served_process_probes_real_servers_over_http(served: Served, fleet: Sequence[MariaDB]) -> None:
    for server in fleet:
        response = httpx.get(f"{served.url}/probe", params={"target": server.name, "query_set": "items"})
        samples = parse_samples(response.text)
        for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"]):
            assert value(samples, "query_exporter_qty_by_kind", kind=kind) == float(qty)


async def _probe_many(url: str, targets: list[str]) -> tuple[list[float], float, float]:
    """Send the probes at once and a health check while they run; return probe durations and timings."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def probe(name: str) -> float:
            response = await client.get("/probe", params={"target": name, "query_set": "sleepy"})
            return value(parse_samples(response.text), "probe_success")

        started = time.monotonic()
        probes = asyncio.gather(*(probe(name) for name in targets))
        await asyncio.sleep(SLEEP_SECONDS / 4)
        health_started = time.monotonic()
        assert (await client.get("/-/healthy")).status_code == 200
        health = time.monotonic() - health_started
        results = await probes
        return results, time.monotonic() - started, health


def test_parallel_probes_neither_block_the_event_loop_nor_each_other(served: Served, fleet: Sequence[MariaDB]) -> None:
    targets = [fleet[index % len(fleet)].name for index in range(PARALLEL_PROBES)]
    results, elapsed, health = asyncio.run(_probe_many(served.url, targets))
    assert results == [1.0] * PARALLEL_PROBES
    # Run one after another they would take PARALLEL_PROBES * SLEEP_SECONDS; together about one SLEEP_SECONDS.
    assert elapsed < PARALLEL_PROBES * SLEEP_SECONDS / 2
    # The loop kept serving while every probe waited on its database.
    assert health < SLEEP_SECONDS / 2


def test_sigterm_stops_the_server_cleanly(served: Served, fleet: Sequence[MariaDB]) -> None:
    httpx.get(f"{served.url}/probe", params={"target": fleet[0].name, "query_set": "items"})
    assert fleet[0].exporter_sessions(), "the probe's connection should be pooled"
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0
    # Engines were disposed: the pooled connection is closed on the server.
    deadline = time.monotonic() + 5
    while fleet[0].exporter_sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fleet[0].exporter_sessions() == []
    log = served.log.read_text()
    assert "Traceback" not in log
    assert fleet[0].password not in log


def test_hung_target_does_not_delay_probes_of_healthy_ones(served: Served, fleet: Sequence[MariaDB]) -> None:
    async def scenario() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
            hung = asyncio.ensure_future(client.get("/probe", params={"target": "hung"}, headers=headers))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            healthy = await client.get(
                "/probe", params={"target": fleet[0].name, "query_set": "items"}, headers=headers
            )
            healthy_elapsed = time.monotonic() - started
            assert value(parse_samples(healthy.text), "probe_success") == 1.0
            hung_response = await hung
            assert value(parse_samples(hung_response.text), "probe_success") == 0.0
            return healthy_elapsed, time.monotonic() - started

    healthy_elapsed, total = asyncio.run(scenario())
    # The healthy probe came back while the hung one was still waiting for its deadline.
    assert healthy_elapsed < total / 2


def test_hung_targets_hold_a_thread_only_until_their_deadline(
    tmp_path: Path, fleet: Sequence[MariaDB], silent_port: int
) -> None:
    # Two threads and two hung probes at once: a hung host that kept its thread until the target's
    # timeout (60 s here) would leave nothing for the healthy probe sent when they have answered.
    # Two targets, not one twice: probes of one target and query sets share one run, and so one thread.
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    targets = fleet_targets(fleet, silent_port, timeout="60s")
    targets["hung_too"] = targets["hung"]

    async def scenario(url: str) -> tuple[tuple[float, float], float]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def probe_success(name: str, query_set: str) -> float:
                response = await client.get("/probe", params={"target": name, "query_set": query_set}, headers=headers)
                return value(parse_samples(response.text), "probe_success")

            hung = await asyncio.gather(probe_success("hung", "items"), probe_success("hung_too", "items"))
            return hung, await probe_success(fleet[0].name, "items")

    with serve(tmp_path, targets, SETS, "--max-threads", "2") as running:
        hung, healthy = asyncio.run(scenario(running.url))
        assert list(hung) == [0.0, 0.0]
        assert healthy == 1.0
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0
