"""A probe's statements go to MySQL/MariaDB in one write (app/probe/pipelined.py); each still runs at most once per
probe: counted statement by statement in the server's slow log (every statement logged, long_query_time=0), where
the general log has only the write's whole text."""

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.servers import MariaDB
from tests.statement_log import runs_of, statement_log


def probe_once(tmp_path: Path, server: MariaDB, metrics: dict[str, Any]) -> dict[Any, Any]:
    config = write_config(tmp_path, {"db": target(server.dsn, "set")}, {"set": metrics})
    with client_for(config) as client:
        return parse_samples(client.get("/probe", params={"target": "db"}).text)


def test_a_query_after_one_cut_at_its_rows_bound_runs_once(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    first, third = f"f{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    metrics = {
        "first": metric(f"select 11 as first_value, '{first}' as marker", "first_value"),
        # A small result past its bound: the server has sent it whole, and gone on with the next statement of the
        # write, before sqlprobe reads the first rows and closes the connection.
        "second": {
            **metric("select seq as second_value, seq as n from seq_1_to_20", "second_value", "n"),
            "max_rows": 10,
        },
        "third": metric(f"select 33 as third_value, '{third}' as marker", "third_value"),
    }
    with statement_log(server):
        samples = probe_once(tmp_path, server, metrics)
        runs = runs_of(server, first), runs_of(server, third)
    assert value(samples, "probe_success") == 1.0
    assert value(samples, "query_exporter_third") == 33.0
    assert runs == (1, 1)


def test_queries_that_each_fit_the_servers_packet_bound_run_though_together_they_do_not(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    # The bound MySQL 5.5 had by default; each query's text is 0.4 MiB, the three together more than the bound.
    pad = "x" * (400 * 1024)
    metrics = {
        name: metric(f"select {number} as {name}_value, '{pad}' as pad", f"{name}_value")
        for number, name in enumerate(("first", "second", "third"), start=1)
    }
    server.execute("set global max_allowed_packet = 1048576")
    try:
        samples = probe_once(tmp_path, server, metrics)
    finally:
        server.execute("set global max_allowed_packet = 16777216")
    assert value(samples, "probe_success") == 1.0
    assert [value(samples, f"query_exporter_{name}") for name in ("first", "second", "third")] == [1.0, 2.0, 3.0]
