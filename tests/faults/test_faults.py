"""Dead, hung and slow servers: the probe answers by its deadline with probe_success 0 and the rest intact."""

import re
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import ITEMS_SET, client_for, metric, parse_samples, target, value, wait_until, write_config
from tests.servers import MariaDB, mariadb_binaries

SLOW_SET = {
    "before": {
        "query": "select 1 as one",
        "type": "gauge",
        "description": "runs before the slow query",
        "value": "one",
    },
    "slow": {
        "query": "select sleep(30) as slept",
        "type": "gauge",
        "description": "never finishes in time",
        "value": "slept",
    },
    "after": {
        "query": "select 2 as two",
        "type": "gauge",
        "description": "queued behind the slow query",
        "value": "two",
    },
}


def test_refused_connection_gives_probe_success_0_with_http_200(tmp_path: Path, closed_port: int) -> None:
    config = write_config(
        tmp_path, {"dead": target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items")}, {"items": ITEMS_SET}
    )
    with client_for(config) as client:
        response = client.get("/probe", params={"target": "dead"})
        debug = client.get("/probe", params={"target": "dead", "debug": "true"}).text
    assert response.status_code == 200
    samples = parse_samples(response.text)
    assert value(samples, "probe_success") == 0.0
    assert set(samples["sqlprobe_query_success"].values()) == {0.0}
    assert "query_exporter_qty_by_kind" not in samples
    assert "connection failed (connect): (2003, \"Can't connect to MySQL server on '127.0.0.1'" in debug
    assert debug.count("  not run: no connection") == len(ITEMS_SET)
    assert "Can't connect" in debug


@pytest.mark.parametrize("scrape_timeout", [2.0, 3.0])
def test_host_that_never_answers_is_reported_before_the_scrape_timeout(
    tmp_path: Path, silent_port: int, scrape_timeout: float
) -> None:
    config = write_config(
        tmp_path, {"hung": target(f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/", "items")}, {"items": ITEMS_SET}
    )
    with client_for(config) as client:
        started = time.monotonic()
        response = client.get(
            "/probe",
            params={"target": "hung", "debug": "true"},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": str(scrape_timeout)},
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    # Prometheus drops a scrape that takes longer than its timeout: the answer must come first.
    assert elapsed < scrape_timeout
    assert f"deadline: {scrape_timeout - 0.5:.3f}s" in response.text
    assert "error (timeout)" in response.text
    assert value(parse_samples(response.text.split("metrics:\n", 1)[1]), "probe_success") == 0.0


def test_target_timeout_bounds_the_probe_when_prometheus_allows_more(tmp_path: Path, silent_port: int) -> None:
    config = write_config(
        tmp_path,
        {"hung": target(f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/", "items", timeout="1s")},
        {"items": ITEMS_SET},
    )
    with client_for(config) as client:
        started = time.monotonic()
        response = client.get(
            "/probe", params={"target": "hung", "debug": "true"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"}
        )
        elapsed = time.monotonic() - started
    assert "deadline: 1.000s" in response.text
    assert "probe_success: 0" in response.text
    assert elapsed < 30 - 0.5


def test_slow_query_is_abandoned_at_the_deadline_killed_on_the_server_and_not_pooled(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    # A target timeout far above the scrape timeout: only KILL QUERY can end the statement quickly.
    config = write_config(tmp_path, {"db": target(server.dsn, "slow", timeout="60s")}, {"slow": SLOW_SET}, namespace="")
    with client_for(config) as client:
        started = time.monotonic()
        response = client.get("/probe", params={"target": "db"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"})
        elapsed = time.monotonic() - started
        samples = parse_samples(response.text)
        assert elapsed < 3
        # What finished is reported; the slow query and the one queued behind it count as failed.
        assert value(samples, "before") == float(server.query(SLOW_SET["before"]["query"])[0][0])
        assert value(samples, "sqlprobe_query_success", metric="before") == 1.0
        assert value(samples, "sqlprobe_query_success", metric="slow") == 0.0
        assert value(samples, "sqlprobe_query_success", metric="after") == 0.0
        assert "after" not in samples
        assert value(samples, "probe_success") == 0.0

        def sleeping() -> list[tuple[int, str, str | None]]:
            return [s for s in server.exporter_sessions() if s[2] and "sleep(30)" in s[2]]

        # The statement is stopped on the server, and its connection closed rather than pooled.
        assert wait_until(lambda: not sleeping(), 5), sleeping()
        assert wait_until(lambda: server.exporter_sessions() == [], 5), server.exporter_sessions()

        # The next probe gets a fresh connection and meets the same deadline.
        again = client.get(
            "/probe", params={"target": "db", "debug": "true"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}
        )
        assert "  metric before: 1 samples" in again.text
        assert "error (timeout): deadline of 1.5s exceeded" in again.text


def test_sql_error_fails_only_its_metric_and_the_scrape_keeps_the_rest(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    query_sets = {
        "mixed": {
            **ITEMS_SET,
            "broken": {"query": "select no_such_column from items", "type": "gauge", "description": "d", "value": "x"},
        }
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "mixed")}, query_sets)
    with client_for(config) as client:
        response = client.get("/probe", params={"target": "db"})
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        own = parse_samples(client.get("/metrics").text)
    samples = parse_samples(response.text)
    assert response.status_code == 200
    assert value(samples, "sqlprobe_query_success", metric="broken") == 0.0
    assert value(samples, "sqlprobe_query_success", metric="qty_by_kind") == 1.0
    for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"]):
        assert value(samples, "query_exporter_qty_by_kind", kind=kind) == float(qty)
    assert value(samples, "probe_success") == 0.0
    assert "Unknown column 'no_such_column'" in debug
    assert value(own, "sqlprobe_query_errors_total", target="db", metric="broken", reason="query") == 2.0


def test_wrong_password_is_a_failed_probe_with_a_clear_error(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    wrong = server.dsn.replace(server.password, "not-the-password-42")
    config = write_config(tmp_path, {"db": target(wrong, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        response = client.get("/probe", params={"target": "db", "debug": "true"})
    assert "Access denied for user 'exporter'" in response.text
    # Where to look next: the user and grants are documented.
    assert "(the exporter user and its grants: docs/quickstart-mysql.md)" in response.text
    assert "not-the-password-42" not in response.text
    assert "probe_success 0.0" in response.text


@pytest.mark.parametrize("read_only", [True, False], ids=["read_only", "read_write"])
def test_connection_killed_while_idle_in_the_pool_is_replaced_on_the_next_probe(
    tmp_path: Path, fleet: Sequence[MariaDB], read_only: bool
) -> None:
    # What wait_timeout does to an idle pooled connection, done at once. The first round trip on the reused
    # connection is sqlprobe's own: the BEGIN, or for a read_only: false target a ping.
    server = fleet[1]
    entry = {**target(server.dsn, "items"), "read_only": read_only}
    config = write_config(tmp_path, {"db": entry}, {"items": ITEMS_SET})
    with client_for(config) as client:
        assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0
        sessions = server.exporter_sessions()
        assert sessions, "the probe's connection should stay pooled"
        server.execute(*(f"kill {session_id}" for session_id, _, _ in sessions))
        assert wait_until(lambda: server.exporter_sessions() == [], 5)
        assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0


def test_first_probe_after_a_server_restart_succeeds(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[1]
    binaries = mariadb_binaries()
    assert binaries is not None
    config = write_config(tmp_path, {"db": target(server.dsn, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        assert value(parse_samples(client.get("/probe", params={"target": "db"}).text), "probe_success") == 1.0
        assert server.exporter_sessions(), "the probe's connection should stay pooled"
        # No probe while the server is down: the pool still holds the connection to the old server process.
        server.stop(signal.SIGKILL)
        server.start(binaries[0])
        up = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert value(up, "probe_success") == 1.0
        for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"]):
            assert value(up, "query_exporter_qty_by_kind", kind=kind) == float(qty)


def test_connection_lost_mid_probe_fails_that_query_and_the_rest_run_on_a_new_connection(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    steps = {
        "before": metric("select 1 as one", "one"),
        "cut": metric("select sleep(20) as slept", "slept"),
        "after": metric("select count(*) as n from items", "n"),
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "steps", timeout="60s")}, {"steps": steps}, namespace="")

    def sleeping() -> list[int]:
        return [session for session, _, info in server.exporter_sessions() if info and "sleep(20)" in info]

    def cut_the_connection() -> None:
        if wait_until(sleeping, 10):
            server.execute(*(f"kill connection {session}" for session in sleeping()))

    cutter = threading.Thread(target=cut_the_connection)
    cutter.start()
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db", "debug": "true"}).text
    cutter.join()
    report, metrics = text.split("\nmetrics:\n")
    samples = parse_samples(metrics)
    assert value(samples, "before") == 1.0
    assert value(samples, "sqlprobe_query_success", metric="cut") == 0.0
    # The server either says so (1927) or just closes the socket (2013), depending on timing.
    assert re.search(r"query 2: metrics cut\n.*\n  rows: -  .*\n  error \(query\): \((1927|2013), ", report), report
    assert value(samples, "after") == float(server.query(steps["after"]["query"])[0][0])
    assert value(samples, "sqlprobe_query_success", metric="after") == 1.0
    assert "internal error" not in report


def test_endless_sqlite_query_is_interrupted_and_frees_its_worker(tmp_path: Path) -> None:
    endless = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) as n from c"
    query_sets = {
        "endless": {"endless": {"query": endless, "type": "gauge", "description": "d", "value": "n"}},
        "quick": {"quick": {"query": "select 7 as n", "type": "gauge", "description": "d", "value": "n"}},
    }
    config = write_config(
        tmp_path, {"lite": target(f"sqlite:///{tmp_path}/lite.db", "endless", "quick", timeout="60s")}, query_sets
    )
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    # One worker thread: if the endless query kept running, the next probe could never start.
    with client_for(config, max_workers=1) as client:
        first = parse_samples(client.get("/probe", params={"target": "lite"}, headers=headers).text)
        assert value(first, "sqlprobe_query_success", metric="endless") == 0.0
        second = client.get("/probe", params={"target": "lite", "query_set": "quick"}, headers=headers)
    assert value(parse_samples(second.text), "query_exporter_quick") == 7.0
