"""A kill is for the statement given up on: a connection whose run was given up on never serves another probe."""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.relay import Relay
from tests.servers import MariaDB


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
