"""A real Prometheus discovers sqlprobe's targets through /sd, scrapes them, and stores what the SQL says."""

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.helpers import ITEMS_SET, metric, target
from tests.paths import ROOT_DIR
from tests.prometheus import Prometheus, config_for_test, running_prometheus
from tests.served import serve
from tests.servers import MariaDB

EXAMPLES = ROOT_DIR / "examples"


def test_prometheus_scrapes_every_discovered_target_with_the_values_of_its_sql(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, prometheus: str
) -> None:
    targets = {server.name: {**target(server.dsn, "items"), "labels": {"env": "test"}} for server in fleet}
    targets["dead"] = target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items")
    with serve(tmp_path / "sqlprobe", targets, {"items": ITEMS_SET}) as exporter:
        address = exporter.url.removeprefix("http://")
        config = config_for_test((EXAMPLES / "prometheus.yml").read_text(), {"127.0.0.1:9104": address})
        with running_prometheus(prometheus, config) as server:
            # Each job is scraped on its own schedule: wait until both have been, for every target.
            server.wait_for(
                "a scrape of every target and of sqlprobe itself, and a user metric of every healthy target",
                lambda: (
                    (
                        len(server.query("up")) == len(targets) + 1
                        and len(server.query('count by (instance) (query_exporter_qty_by_kind{job="sqlprobe"})'))
                        == len(fleet)
                    )
                    or None
                ),
            )
            success = {labels["instance"]: found for labels, found in server.query('probe_success{job="sqlprobe"}')}
            up = {labels["job"] + "/" + labels["instance"]: found for labels, found in server.query("up")}
            stored = {
                (labels["instance"], labels["kind"], labels.get("env")): found
                for labels, found in server.query('query_exporter_qty_by_kind{job="sqlprobe"}')
            }
    assert success == {**{server.name: 1.0 for server in fleet}, "dead": 0.0}
    # Prometheus reached the exporter for every target, the dead one included, and its own metrics.
    assert up == {**{f"sqlprobe/{name}": 1.0 for name in targets}, f"sqlprobe_exporter/{address}": 1.0}
    expected = {
        (server.name, kind, "test"): float(qty)
        for server in fleet
        for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"])
    }
    assert stored == expected


DASHBOARD = EXAMPLES / "grafana-dashboard.json"
RULES = EXAMPLES / "alerts.yml"
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+), (?P<label>\w+)\)$")


def _dashboard_queries(url: str) -> dict[str, str]:
    """Every PromQL expression of the shipped dashboard, its variables set as Grafana sets them on opening it.

    Each template variable is "All": the values its label_values() query finds, as a regex. A variable that finds
    none fails here.
    """
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$__rate_interval": "1m"}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = LABEL_VALUES.match(variable["definition"])
        assert found is not None, variable["definition"]
        selector = _substitute(found["selector"], variables)
        values = sorted({series["metric"][found["label"]] for series in _evaluate(url, selector)})
        assert values, f"variable {variable['name']}: {selector} has no series"
        variables[f"${variable['name']}"] = "(" + "|".join(re.escape(value) for value in values) + ")"
    queries = {
        f"panel {panel['title']!r} {query['refId']}": _substitute(query["expr"], variables)
        for panel in dashboard["panels"]
        for query in panel.get("targets", [])
    }
    for name, expression in queries.items():
        assert "$" not in expression, f"{name}: a Grafana variable the test does not know: {expression}"
    return queries


def _substitute(expression: str, variables: dict[str, str]) -> str:
    # Longest names first: $instance must not be taken for $in... of a shorter one.
    for variable in sorted(variables, key=len, reverse=True):
        expression = expression.replace(variable, variables[variable])
    return expression


def _evaluate(url: str, expression: str) -> list[Any]:
    """The instant result of ``expression``; a parse error fails the test with Prometheus's message."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expression}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


def test_every_dashboard_panel_and_rule_has_data_from_a_real_prometheus_scraping_a_real_fleet(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, prometheus: str
) -> None:
    # A healthy server whose set has a metric that skips a row (NULL) and one that fails (a missing column),
    # and a dead server: every panel then has something to show.
    dash_set = {
        **ITEMS_SET,
        "with_null": metric("select 'a' as k, null as v union all select 'b', 1", "v", "k"),
        "misnamed": metric("select 1 as n", "no_such_column"),
    }
    targets = {fleet[0].name: target(fleet[0].dsn, "dash")}
    targets["dead"] = target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "dash")
    with serve(tmp_path / "sqlprobe", targets, {"dash": dash_set}) as exporter:
        address = exporter.url.removeprefix("http://")
        config = config_for_test((EXAMPLES / "prometheus.yml").read_text(), {"127.0.0.1:9104": address})
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(RULES)]
        with running_prometheus(prometheus, config) as server:
            server.wait_for(
                "a probe of every target",
                lambda: (
                    len({s["metric"]["instance"] for s in _evaluate(server.url, "sqlprobe_query_success")})
                    == len(targets)
                    or None
                ),
            )
            empty = _wait_for_data(server, _dashboard_queries(server.url))
    assert empty == []


def _wait_for_data(server: Prometheus, queries: dict[str, str]) -> list[str]:
    """Poll until every query (and the dead target's pending alert) has data; the names still empty at 60 s."""
    checks = {**queries, "alert SqlprobeTargetDown of dead": 'ALERTS{alertname="SqlprobeTargetDown",instance="dead"}'}
    deadline = time.monotonic() + 60
    while True:
        empty = [name for name, expression in checks.items() if not _evaluate(server.url, expression)]
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(1)
