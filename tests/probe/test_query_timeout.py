"""A metric's own timeout: its query is stopped by the server after it, fails alone with its reason, and the
probe's other metrics arrive."""

import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest

from app.probe.failures import MAX_MESSAGE
from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

TIMEOUT = 10.0


def _sets(sleep: str) -> dict[str, dict[str, dict[str, object]]]:
    return {
        "s": {
            "slow": metric(f"select {sleep}", "n") | {"timeout": "1s"},
            "answers": metric("select 42 as n", "n"),
        }
    }


def test_a_mariadb_metric_past_its_timeout_fails_alone_and_stops_on_the_server(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "s", timeout=f"{TIMEOUT:g}s")}, _sets("sleep(5) as n"))
    with client_for(config) as client:
        started = time.monotonic()
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        elapsed = time.monotonic() - started
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        # Nothing of it runs on the server any more.
        sleeping = [session for session in server.exporter_sessions() if "sleep" in (session[2] or "").lower()]
    assert sleeping == []
    assert value(samples, "sqlprobe_query_success", metric="slow") == 0.0
    assert value(samples, "sqlprobe_query_success", metric="answers") == 1.0
    assert value(samples, "query_exporter_answers") == 42.0
    assert "query_exporter_slow" not in samples
    assert 1.0 <= elapsed < 2.5
    assert "the query's timeout of 1s passed" in debug
    assert "max_statement_time exceeded" in debug


def test_a_postgresql_metric_past_its_timeout_fails_alone_and_stops_on_the_server(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    sets = _sets("1 as n from pg_sleep(5)")
    config = write_config(tmp_path, {"db": target(postgres.dsn, "s", timeout=f"{TIMEOUT:g}s")}, sets)
    with client_for(config) as client:
        started = time.monotonic()
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        elapsed = time.monotonic() - started
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        running = [query for state, query in postgres.exporter_sessions() if state == "active" and "pg_sleep" in query]
    assert running == []
    assert value(samples, "sqlprobe_query_success", metric="slow") == 0.0
    assert value(samples, "sqlprobe_query_success", metric="answers") == 1.0
    assert value(samples, "query_exporter_answers") == 42.0
    assert 1.0 <= elapsed < 2.5
    assert "the query's timeout of 1s passed" in debug
    assert "canceling statement due to statement timeout" in debug


def test_a_servers_huge_error_message_is_kept_and_shown_cut(tmp_path: Path, postgres: PostgreSQL) -> None:
    # PostgreSQL quotes the whole value it could not read in its message: 100,000 characters here.
    sql = "select repeat('x', 100000)::int as n"
    with pytest.raises(psycopg.Error) as direct:
        postgres.query(sql)
    sets = {"s": {"bad": metric(sql, "n"), "answers": metric("select 42 as n", "n")}}
    config = write_config(tmp_path, {"db": target(postgres.dsn, "s")}, sets)
    with client_for(config) as client:
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        logs = client.get("/logs", params={"target": "db"}).text
    assert "invalid input syntax for type integer" in debug
    assert f"(cut: {len(str(direct.value)) - MAX_MESSAGE} more characters)" in debug
    assert len(debug) < 20_000
    assert "x" * MAX_MESSAGE not in logs
    assert len(logs) < 40_000


def test_a_kill_sent_past_a_metrics_timeout_never_stops_the_next_metric(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    # The query lifts the server's limit itself, so sqlprobe's own KILL QUERY stops it, by connection id, a second
    # after its timeout; when the statement ended first, that kill stopped whatever ran next on the connection (4
    # probes in 6 on the code before, a healthy metric failing with 1317 'Query execution was interrupted').
    server = fleet[0]
    sets = {
        "s": {
            "racer": metric("set statement max_statement_time=0 for select sleep(2.0) as n", "n") | {"timeout": "1s"},
            "victim": metric("select sleep(0.7) + 5 as n", "n"),
        }
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "s", timeout=f"{TIMEOUT:g}s")}, sets)
    ((expected,),) = server.query("select 0 + 5")
    with client_for(config) as client:
        outcomes = [parse_samples(client.get("/probe", params={"target": "db"}).text) for _ in range(4)]
    for samples in outcomes:
        assert value(samples, "sqlprobe_query_success", metric="victim") == 1.0
        assert value(samples, "query_exporter_victim") == float(expected)
