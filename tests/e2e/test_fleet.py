"""Fleet behaviour: concurrent probes share a run, min_interval serves results again, idle engines are closed."""

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, wait_until, write_config
from tests.served import serve
from tests.servers import MariaDB

NAP = {"nap": {"nap": metric("select sleep(1) as slept", "slept")}, "other": {"one": metric("select 1 as n", "n")}}


def _sleeping(server: MariaDB) -> int:
    return sum(1 for _, _, info in server.exporter_sessions() if info and "sleep(1)" in info)


def test_concurrent_probes_of_one_target_share_one_run_on_the_database(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]

    async def scenario(url: str) -> tuple[list[float], int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # Two Prometheus servers scraping the same target at the same moment.
            probes = [asyncio.ensure_future(client.get("/probe", params={"target": "db"})) for _ in range(2)]
            await asyncio.sleep(0.5)
            running = await asyncio.to_thread(_sleeping, server)
            answers = await asyncio.gather(*probes)
            return [value(parse_samples(answer.text), "probe_success") for answer in answers], running

    with serve(tmp_path, {"db": target(server.dsn, "nap", "other")}, NAP) as running:
        successes, sessions = asyncio.run(scenario(running.url))
        own = parse_samples(httpx.get(f"{running.url}/metrics").text)
    assert successes == [1.0, 1.0]
    assert sessions == 1
    assert value(own, "sqlprobe_probes_total", target="db", result="success") == 2.0


def test_probes_of_different_query_sets_do_not_share(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]

    async def scenario(url: str) -> int:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            probes = [
                asyncio.ensure_future(client.get("/probe", params={"target": "db"})),
                asyncio.ensure_future(client.get("/probe", params={"target": "db", "query_set": "nap"})),
            ]
            await asyncio.sleep(0.5)
            sessions = await asyncio.to_thread(_sleeping, server)
            await asyncio.gather(*probes)
            return sessions

    with serve(tmp_path, {"db": target(server.dsn, "nap", "other")}, NAP) as running:
        assert asyncio.run(scenario(running.url)) == 2


def _ticket(samples: dict[str, Any], name: str) -> float:
    return value(samples, f"query_exporter_{name}")


def test_min_interval_serves_a_successful_result_again_and_never_a_failure(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    # uuid_short() changes on every call (taken modulo 10⁹ so that a float keeps it exact): a repeated value
    # means the SQL did not run again.
    sets = {
        "tickets": {
            "cached": {**metric("select uuid_short() % 1000000000 as n", "n"), "min_interval": "1m"},
            "fresh": metric("select uuid_short() % 1000000000 + 0 as n", "n"),
            "flaky": {**metric("select count(*) as n from probe.appears_later", "n"), "min_interval": "1m"},
        }
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "tickets")}, sets)
    with client_for(config) as client:
        first = parse_samples(client.get("/probe", params={"target": "db"}).text)
        server.execute("create table probe.appears_later (id int)", "insert into probe.appears_later values (1), (2)")
        try:
            second = probe_views(client, "db")
        finally:
            server.execute("drop table probe.appears_later")
    assert _ticket(second.samples, "cached") == _ticket(first, "cached")
    assert _ticket(second.samples, "fresh") != _ticket(first, "fresh")
    # The failed query was not kept: the second probe ran it, and it succeeded.
    assert value(first, "sqlprobe_query_success", metric="flaky") == 0.0
    assert value(second.samples, "sqlprobe_query_success", metric="flaky") == 1.0
    assert _ticket(second.samples, "flaky") == 2.0
    assert "not run: the result of" in second.debug
    assert "(min_interval 60s)" in second.debug


def test_min_interval_runs_the_query_again_once_it_has_passed(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    sets = {"tickets": {"cached": {**metric("select uuid_short() % 1000000000 as n", "n"), "min_interval": "300ms"}}}
    config = write_config(tmp_path, {"db": target(fleet[1].dsn, "tickets")}, sets)
    with client_for(config) as client:
        first = parse_samples(client.get("/probe", params={"target": "db"}).text)
        time.sleep(0.4)
        later = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert _ticket(later, "cached") != _ticket(first, "cached")


def test_engines_no_probe_used_for_a_while_are_disposed(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "other")}, NAP)
    with client_for(config, idle_engine_timeout=0.5) as client:
        assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0
        assert server.exporter_sessions() != []

        def engines() -> float:
            return value(parse_samples(client.get("/metrics").text), "sqlprobe_engines")

        assert wait_until(lambda: engines() == 0.0, 5)
        assert wait_until(lambda: server.exporter_sessions() == [], 5)
        # The next probe simply builds the engine again.
        assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0
        assert engines() == 1.0


def _server_counters(server: MariaDB) -> dict[str, int]:
    rows = server.root_query(
        "show global status where variable_name in ('Questions', 'Com_begin', 'Com_commit', 'Com_rollback', 'Com_set_option')"
    )
    return {name: int(count) for name, count in rows}


def test_a_probe_costs_the_server_its_queries_each_in_a_read_only_transaction_and_nothing_more(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    sets = {"three": {key: metric(f"select {number} as n", "n") for number, key in enumerate(("a", "b", "c"))}}
    config = write_config(tmp_path, {"db": target(server.dsn, "three")}, sets)
    probes = 5
    with client_for(config) as client:
        client.get("/probe", params={"target": "db"})  # connects: its set-up statements are not per probe
        # Reading the counters costs statements of its own (a connection's SET, the SHOW): measure that too.
        first, before = _server_counters(server), _server_counters(server)
        for _ in range(probes):
            assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0
        after = _server_counters(server)
    spent = {name: after[name] - before[name] - (before[name] - first[name]) for name in after}
    # No ROLLBACK at the end of a checkout, no ping before it: each of the 3 queries in a read-only transaction of
    # its own (START TRANSACTION READ ONLY before each ends the one before; a COMMIT after the last). The session
    # is reset first (COM_RESET_CONNECTION) and sqlprobe's two SETs made again, in the first round trip, and the
    # COMMIT's text lets go of named locks (DO RELEASE_ALL_LOCKS()): four statements more, no round trip more.
    queries = len(sets["three"])
    clean_session = 4
    assert spent == {
        "Com_begin": probes * queries,
        "Com_commit": probes,
        "Com_rollback": 0,
        "Com_set_option": probes * 2,
        "Questions": probes * (queries + queries + 1 + clean_session),
    }
