"""A kill is for the statement given up on: a connection whose run was given up on never serves another probe."""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers import client_for, metric, parse_samples, target, value, wait_until, write_config
from tests.relay import Relay
from tests.served import serve
from tests.servers import MariaDB

# Each way, on the probe's pooled connection: a round trip takes 1 s, so BEGIN, the statement and the COMMIT that
# ends the run's read-only transaction take 1 s each. A 2.75 s deadline comes while the COMMIT is under way, and its
# answer comes before the connection would be cut (half a second after the deadline).
LATENCY = 0.5
FIRST_DEADLINE = "3.25"  # scrape timeout: 2.75 s for the probe
# The kill's connection reaches the server this late: when the next probe's statement runs on the pooled connection.
KILL_DELAY = 4.0
SLEEP_SQL = "select sleep(5) as slept"


def test_a_probe_given_up_on_during_its_commit_gets_no_later_probe_killed(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    sets = {"quick": {"one": metric("select 1 as one", "one")}, "sleepy": {"slept": metric(SLEEP_SQL, "slept")}}
    with Relay([server.port]) as relay:
        relay.latency = LATENCY  # the first connection only: the one the pool keeps
        dsn = server.dsn.replace(f":{server.port}/", f":{relay.port}/")
        with serve(tmp_path, {"db": target(dsn, "quick", "sleepy", timeout="60s")}, sets) as served:
            url = f"{served.url}/probe"
            warm = httpx.get(url, params={"target": "db", "query_set": "quick"}, timeout=70)
            assert value(parse_samples(warm.text), "probe_success") == 1.0
            relay.latency, relay.delay = 0.0, KILL_DELAY
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": FIRST_DEADLINE}
            given_up = httpx.get(url, params={"target": "db", "query_set": "quick"}, headers=headers, timeout=70)
            # The server has run its COMMIT; the answer is on its way back (half a second), then the run is over.
            assert wait_until(lambda: all(command == "Sleep" for _, command, _ in server.exporter_sessions()), 5)
            time.sleep(2 * LATENCY)
            # The next probe, on whatever connection the pool gives it, sleeps the whole 5 s (SLEEP() gives 1 if killed).
            later = httpx.get(url, params={"target": "db", "query_set": "sleepy"}, timeout=70)
    # Its query had finished: the answer has its result, though the run's COMMIT was still under way.
    assert value(parse_samples(given_up.text), "probe_success") == 1.0
    samples = parse_samples(later.text)
    assert value(samples, "probe_success") == 1.0
    ((slept,),) = server.query("select sleep(0) as slept")
    assert value(samples, "query_exporter_slept") == float(slept)


def test_a_kill_that_arrives_after_its_statement_ended_logs_no_warning(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[1]
    # Past the 1 s deadline of a 1.5 s scrape, and ended before the kill (2 s late) gets there.
    sql = "select sleep(1.3) as slept"
    sets = {"quick": {"one": metric("select 1 as one", "one")}, "sleepy": {"slept": metric(sql, "slept")}}
    with Relay([server.port]) as relay:
        dsn = server.dsn.replace(f":{server.port}/", f":{relay.port}/")
        config = write_config(tmp_path, {"db": target(dsn, "quick", "sleepy")}, sets)
        with client_for(config) as client:
            warm = client.get("/probe", params={"target": "db", "query_set": "quick"})
            relay.delay = 2.0
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
            late = client.get("/probe", params={"target": "db", "query_set": "sleepy"}, headers=headers)
            # The kill's connection gets through 2 s late, when the statement's session is gone (it ended, and its
            # connection was discarded).
            time.sleep(relay.delay + 1)
    assert value(parse_samples(warm.text), "probe_success") == 1.0
    assert value(parse_samples(late.text), "probe_success") == 0.0
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
