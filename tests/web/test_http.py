"""The HTTP API as Prometheus and people use it, served on SQLite targets (no MySQL needed)."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from app.probe.results import ProbeResult
from app.probe.telemetry import Telemetry
from app.web.probe_endpoint import _parameters
from tests.helpers import client_for, parse_samples, target, value, write_config

SQLITE_SETS = {
    "tables": {
        "table_rows": {
            "query": "select 'widgets' as tbl, count(*) as n from widgets",
            "type": "gauge",
            "description": "rows per table",
            "labels": ["tbl"],
            "value": "n",
        }
    },
    "version": {
        "sqlite_info": {
            "query": "select sqlite_version() as version, 1 as info",
            "type": "gauge",
            "description": "SQLite version",
            "labels": ["version"],
            "value": "info",
        }
    },
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """An app with two SQLite targets of different contents."""
    for name, rows in (("small", 2), ("large", 5)):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute("create table widgets (id integer)")
            db.executemany("insert into widgets values (?)", [(i,) for i in range(rows)])
    targets = {
        name: {**target(f"sqlite:///{tmp_path / name}.db", "tables", "version"), "labels": {"size": name}}
        for name in ("small", "large")
    }
    with client_for(write_config(tmp_path, targets, SQLITE_SETS)) as test_client:
        yield test_client


def test_probe_answers_each_target_with_its_own_values(client: TestClient, tmp_path: Path) -> None:
    for name in ("small", "large"):
        response = client.get("/probe", params={"target": name})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            (count,) = db.execute("select count(*) from widgets").fetchone()
        assert value(parse_samples(response.text), "query_exporter_table_rows", tbl="widgets") == float(count)


def test_a_probe_carries_only_its_own_targets_and_query_sets_samples(client: TestClient) -> None:
    client.get("/probe", params={"target": "large"})
    samples = parse_samples(client.get("/probe", params={"target": "small", "query_set": "version"}).text)
    assert "query_exporter_table_rows" not in samples
    assert set(samples["sqlprobe_query_success"]) == {(("metric", "sqlite_info"),)}


def test_probe_carries_probe_success_duration_and_per_metric_status(client: TestClient) -> None:
    samples = parse_samples(client.get("/probe", params={"target": "small"}).text)
    assert value(samples, "probe_success") == 1.0
    assert value(samples, "probe_duration_seconds") > 0
    for metric in ("table_rows", "sqlite_info"):
        assert value(samples, "sqlprobe_query_success", metric=metric) == 1.0
        assert value(samples, "sqlprobe_query_duration_seconds", metric=metric) >= 0


@pytest.mark.parametrize(
    ("params", "status", "body"),
    [
        ({}, 400, "the 'target' parameter is required, e.g. /probe?target=NAME"),
        ({"target": ""}, 400, "the 'target' parameter is required, e.g. /probe?target=NAME"),
        ({"target": "nope"}, 404, "unknown target 'nope': no target of that name is configured\n"),
        (
            {"target": "small", "query_set": "other"},
            400,
            "query set 'other' is not assigned to target 'small' (its query sets: tables, version)",
        ),
        ({"target": "small", "debug": "maybe"}, 400, "invalid request: debug: Input should be a valid boolean"),
        ({"target": ["small", "large"]}, 400, "give one 'target' parameter per probe"),
    ],
)
def test_bad_requests_get_a_sentence_not_a_traceback(
    client: TestClient, params: dict[str, str | list[str]], status: int, body: str
) -> None:
    response = client.get("/probe", params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(body)


@pytest.mark.parametrize("header", ["soon", "0", "-3", "nan"])
def test_unusable_scrape_timeout_header_is_a_bad_request(client: TestClient, header: str) -> None:
    response = client.get("/probe", params={"target": "small"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert response.status_code == 400
    assert "X-Prometheus-Scrape-Timeout-Seconds must be a positive number" in response.text


def test_repeated_scrape_timeout_header_is_a_bad_request(client: TestClient) -> None:
    headers = [("X-Prometheus-Scrape-Timeout-Seconds", "4"), ("X-Prometheus-Scrape-Timeout-Seconds", "0.5")]
    response = client.get("/probe", params={"target": "small"}, headers=headers)
    assert (response.status_code, response.text) == (
        400,
        "give one X-Prometheus-Scrape-Timeout-Seconds header per probe\n",
    )


@pytest.mark.parametrize(
    ("header", "deadline"),
    [("4", "3.500s"), ("1.2", "0.700s"), ("1", "0.500s"), ("0.6", "0.300s"), ("60", "10.000s")],
)
def test_scrape_timeout_header_sets_the_deadline_less_half_a_second_capped_by_the_target_timeout(
    client: TestClient, header: str, deadline: str
) -> None:
    # Under 1 s, half a second would leave (almost) nothing: the deadline is then half the scrape timeout.
    response = client.get(
        "/probe",
        params={"target": "small", "debug": "true"},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": header},
    )
    assert f"deadline: {deadline}" in response.text


def test_debug_page_accounts_for_each_query_then_the_metrics(client: TestClient, tmp_path: Path) -> None:
    response = client.get("/probe", params={"target": "large", "debug": "true"})
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert text.startswith("target: large\n")
    assert f"dsn: sqlite:///{tmp_path}/large.db" in text
    assert "    select 'widgets' as tbl, count(*) as n from widgets" in text
    assert "query sets: tables, version\n" in text
    assert "  rows: 1  duration: " in text
    assert "not run" not in text
    assert "  metric query_exporter_table_rows: 1 samples\n" in text
    assert "  metric query_exporter_sqlite_info: 1 samples\n" in text
    report, metrics = text.split("\nmetrics:\n")
    assert "query_exporter_table_rows" in report
    assert value(parse_samples(metrics), "probe_success") == 1.0


def test_debug_page_of_a_restricted_probe_names_only_the_sets_it_ran(client: TestClient) -> None:
    text = client.get("/probe", params={"target": "large", "query_set": "version", "debug": "true"}).text
    assert "query sets: version\n" in text
    assert "sqlite_version()" in text
    assert "from widgets" not in text


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nowhere", 404), ("POST", "/probe", 405)])
def test_unknown_paths_and_methods_get_a_sentence(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(f"{response.reason_phrase}: {method} {path}")


def test_openmetrics_is_served_when_asked_for(client: TestClient) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    for path in ("/probe?target=small", "/metrics"):
        response = client.get(path, headers={"Accept": accept})
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")


def test_own_metrics_count_probes_errors_and_engines(client: TestClient) -> None:
    client.get("/probe", params={"target": "small"})
    client.get("/probe", params={"target": "small"})
    client.get("/probe", params={"target": "large", "query_set": "version"})
    text = client.get("/metrics").text
    samples = parse_samples(text)
    assert value(samples, "sqlprobe_probes_total", target="small", result="success") == 2.0
    assert value(samples, "sqlprobe_probes_total", target="large", result="success") == 1.0
    assert value(samples, "sqlprobe_probe_duration_seconds_count") == 3.0
    assert value(samples, "sqlprobe_engines") == 2.0
    assert "sqlprobe_build_info" in samples
    assert "process_resident_memory_bytes" in samples
    assert "python_info" in samples
    assert "# TYPE sqlprobe_query_errors_total counter" in text
    # Only the exporter's own metrics: the targets' live on /probe.
    assert "query_exporter_table_rows" not in samples
    assert "probe_success" not in samples


@pytest.mark.parametrize("path", ["/-/healthy", "/-/ready"])
def test_health_endpoints_answer_200(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.text) == (200, "OK")


def test_in_memory_sqlite_target_is_probed_like_any_other(tmp_path: Path) -> None:
    query_sets = {"up": {"up": {"query": "select 1 as up", "type": "gauge", "description": "d", "value": "up"}}}
    with client_for(write_config(tmp_path, {"memory": target("sqlite://", "up")}, query_sets)) as client:
        samples = parse_samples(client.get("/probe", params={"target": "memory"}).text)
    assert value(samples, "query_exporter_up") == 1.0
    assert value(samples, "probe_success") == 1.0


def test_a_bug_while_answering_a_probe_is_a_500_sentence_and_the_log_names_only_its_type(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "text of an exception, which may quote a DSN"

    def broken(_: Telemetry, __: ProbeResult) -> None:  # a bug after the probe ran
        raise RuntimeError(secret)

    monkeypatch.setattr(Telemetry, "observe", broken)
    response = client.get("/probe", params={"target": "small"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "internal error, see sqlprobe's log\n"
    assert secret not in caplog.text
    assert "probe request failed unexpectedly: RuntimeError at " in caplog.text
    monkeypatch.undo()
    assert client.get("/probe", params={"target": "small"}).status_code == 200


@given(st.text(st.sampled_from("ab=&%+2é;")))
@example("target=db1&query_set=a&query_set=b&debug=")
@example("&&target&=x&a=b=c")
@example("target=a%20b+c")
def test_probe_parameters_are_read_as_parse_qsl_reads_them(query: str) -> None:
    assert _parameters(query) == parse_qsl(query, keep_blank_values=True)
