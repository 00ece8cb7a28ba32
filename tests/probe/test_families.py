"""Metrics named from rows (name_from), rows mapped to labelled families, prefix: false, untyped, mysqld_exporter's
numbers: what a probe of a real MariaDB shows."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.helpers import client_for, parse_samples, target, value, write_config
from tests.servers import MariaDB

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
VARIABLES = "show global variables where variable_name in ('max_connections', 'autocommit', 'version', 'big_tables')"
STATUS = "show global status where variable_name in ('Com_select', 'Com_insert', 'Uptime', 'Innodb_page_size')"


def _sets() -> dict[str, Any]:
    return {
        "rows": {
            "vars": {
                "query": VARIABLES,
                "type": "gauge",
                "description": "a variable",
                "name_from": "variable_name",
                "value": "value",
                "numbers": "mysqld_exporter",
                "prefix": False,
            },
            "status": {
                "query": STATUS,
                "type": "untyped",
                "description": "a status variable",
                "name_from": "variable_name",
                "value": "value",
                "families": [
                    {"match": "com_(?P<command>.*)", "name": "commands_total", "type": "counter", "description": "c"},
                    {"match": "innodb_page_size", "drop": True},
                ],
            },
            "up": {"query": "select 1 as up", "type": "untyped", "description": "up", "value": "up", "prefix": False},
        }
    }


def test_name_from_gives_a_metric_per_row_named_from_its_column_with_mysqld_exporters_numbers(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    expected = {name.lower(): text for name, text in server.query(VARIABLES)}
    config = write_config(tmp_path, {"db": target(server.dsn, "rows")}, _sets())
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
    samples = parse_samples(text)
    assert value(samples, "vars_max_connections") == float(expected["max_connections"])
    assert value(samples, "vars_autocommit") == (1.0 if expected["autocommit"] == "ON" else 0.0)
    assert value(samples, "vars_big_tables") == (1.0 if expected["big_tables"] == "ON" else 0.0)
    assert "vars_version" not in samples  # not a number: skipped, as mysqld_exporter does
    assert text.count("# TYPE vars_max_connections gauge\n") == 1
    assert value(samples, "probe_success") == 1.0


def test_rows_matching_a_family_rule_become_one_labelled_family_and_the_others_their_own(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    before = {name.lower(): float(text) for name, text in server.query(STATUS)}
    config = write_config(tmp_path, {"db": target(server.dsn, "rows")}, _sets())
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
        openmetrics = client.get("/probe", params={"target": "db"}, headers={"Accept": OPENMETRICS}).text
    after = {name.lower(): float(text) for name, text in server.query(STATUS)}
    samples = parse_samples(text)
    for command in ("select", "insert"):
        seen = value(samples, "query_exporter_status_commands_total", command=command)
        assert before[f"com_{command}"] <= seen <= after[f"com_{command}"]
    assert before["uptime"] <= value(samples, "query_exporter_status_uptime") <= after["uptime"]
    assert not any("innodb_page_size" in name or "com_select" in name for name in samples)  # dropped, or in the family
    assert text.count("# TYPE query_exporter_status_commands_total counter\n") == 1
    assert "# TYPE query_exporter_status_uptime untyped\n" in text
    assert "# TYPE up untyped\n" in text  # prefix: false: the key is the whole name
    families = {family.name: family.type for family in parse_openmetrics(openmetrics)}  # type: ignore[no-untyped-call]
    assert families["query_exporter_status_commands"] == "counter"
    assert families["query_exporter_status_uptime"] == "unknown"
    assert families["up"] == "unknown"
