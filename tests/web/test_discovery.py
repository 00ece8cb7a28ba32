"""GET /sd: the targets in Prometheus's HTTP service discovery format."""

from pathlib import Path
from typing import Any

from app.web.discovery import QUERY_SET_PARAMETER_LABEL, QUERY_SETS_LABEL
from tests.helpers import client_for, metric, target, write_config

SETS = {
    "fast": {"one": metric("select 1 as n", "n")},
    "slow": {"two": metric("select 2 as n", "n")},
}


def _targets() -> dict[str, Any]:
    return {
        "eu-1": {**target("sqlite://", "fast", "slow"), "labels": {"region": "eu", "tier": "gold"}},
        "us-1": {**target("sqlite://", "fast"), "labels": {"region": "us"}},
        "bare": target("sqlite://", "slow"),
    }


def test_sd_lists_one_group_per_target_with_its_labels_and_query_sets(tmp_path: Path) -> None:
    config = write_config(tmp_path, _targets(), SETS)
    with client_for(config) as client:
        response = client.get("/sd")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {"targets": ["eu-1"], "labels": {"region": "eu", "tier": "gold", QUERY_SETS_LABEL: "fast,slow"}},
        {"targets": ["us-1"], "labels": {"region": "us", QUERY_SETS_LABEL: "fast"}},
        {"targets": ["bare"], "labels": {QUERY_SETS_LABEL: "slow"}},
    ]


def test_sd_query_set_filter_keeps_its_targets_and_makes_prometheus_probe_only_that_set(tmp_path: Path) -> None:
    config = write_config(tmp_path, _targets(), SETS)
    with client_for(config) as client:
        groups = client.get("/sd", params={"query_set": "slow"}).json()
        assert [group["targets"] for group in groups] == [["eu-1"], ["bare"]]
        assert {group["labels"][QUERY_SET_PARAMETER_LABEL] for group in groups} == {"slow"}
        # What Prometheus then requests, /probe?target=eu-1&query_set=slow, runs only that set.
        probe = client.get("/probe", params={"target": "eu-1", "query_set": "slow"}).text
    assert "query_exporter_two 2.0" in probe
    assert "query_exporter_one" not in probe


def test_sd_with_an_unknown_or_repeated_query_set_is_a_bad_request(tmp_path: Path) -> None:
    config = write_config(tmp_path, _targets(), SETS)
    with client_for(config) as client:
        unknown = client.get("/sd", params={"query_set": "nope"})
        repeated = client.get("/sd", params=[("query_set", "fast"), ("query_set", "slow")])
    assert (unknown.status_code, unknown.text) == (
        400,
        "unknown query set 'nope': no query set of that name is configured\n",
    )
    assert str(tmp_path) not in unknown.text
    assert (repeated.status_code, repeated.text) == (400, "give at most one 'query_set' parameter to /sd\n")
