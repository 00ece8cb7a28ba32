"""Metrics named from rows (name_from), rows mapped to labelled families, prefix: false, untyped, mysqld_exporter's
numbers: what a probe of a real MariaDB shows."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.helpers import client_for, parse_samples, probe_views, target, value, write_config
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


def _named(query: str, kind: str = "gauge", **more: Any) -> dict[str, Any]:
    return {"query": query, "type": kind, "description": "d", "name_from": "n", "value": "v", **more}


def _name(text: object) -> str:
    """A row name as mysqld_exporter makes it (computed here, not by sqlprobe)."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in str(text)).lower()


def test_rows_with_an_empty_null_or_overlong_name_are_skipped_and_counted_not_named(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = (
        "select 'ok' as n, 1 as v union all select repeat('x', 200), 2 union all select repeat('y', 201), 3"
        " union all select repeat('z', 50000), 4 union all select '', 5 union all select null, 6"
    )
    families = [{"match": "(?P<what>y+)", "name": "ys", "type": "gauge", "description": "y"}]
    sets = {"s": {"s": _named(sql, families=families)}}
    config = write_config(tmp_path, {"db": target(server.dsn, "s")}, sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    rows = server.query(sql)
    kept = {f"s_{_name(n)}": float(v) for n, v in rows if n and len(n) <= 200}
    assert {name: number for name, series in views.samples.items() if name.startswith("s_")
            for number in series.values()} == kept  # fmt: skip
    assert max(map(len, views.samples)) <= len("s_") + 200
    too_long = sum(1 for n, _ in rows if n and len(n) > 200)
    empty = sum(1 for n, _ in rows if not n)
    own = views.own
    assert value(own, "sqlprobe_query_errors_total", target="db", metric="s", reason="name_too_long") == 2 * too_long
    assert value(own, "sqlprobe_query_errors_total", target="db", metric="s", reason="empty_name") == 2 * empty
    assert f"metric s: {len(kept)} samples, skipped rows: " in views.debug
    assert value(views.samples, "probe_success") == 1.0


def test_row_names_come_from_the_cells_text_whatever_another_target_named_before(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    # 1 == 1.0 == Decimal("1.0") in Python: a cache keyed on the cell named a target's rows after another's.
    server = fleet[0]
    decimals = "select 1.0 as n, 10 as v union all select 2.0, 20"
    integers = "select 1 as n, 30 as v union all select 2, 40"
    sets = {"decimals": {"s": _named(decimals)}, "integers": {"s": _named(integers)}}
    targets = {"d": target(server.dsn, "decimals"), "i": target(server.dsn, "integers")}
    config = write_config(tmp_path, targets, sets, namespace="")
    with client_for(config) as client:
        seen = {name: parse_samples(client.get("/probe", params={"target": name}).text) for name in ("d", "i", "d")}
    for name, sql in (("d", decimals), ("i", integers)):
        expected = {f"s_{_name(n)}": float(v) for n, v in server.query(sql)}
        assert {n: value(seen[name], n) for n in seen[name] if n.startswith("s_")} == expected


def test_a_counter_row_named_like_another_rows_created_sample_is_skipped_so_openmetrics_parses(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select 'a' as n, 1 as v union all select 'a_created', 2 union all select 'b', 3"
    config = write_config(tmp_path, {"db": target(server.dsn, "s")}, {"s": {"s": _named(sql, "counter")}}, namespace="")
    with client_for(config) as client:
        openmetrics = client.get("/probe", params={"target": "db"}, headers={"Accept": OPENMETRICS}).text
        views = probe_views(client, "db")
    parsed = {family.name: family for family in parse_openmetrics(openmetrics)}  # type: ignore[no-untyped-call]
    assert {name for name in parsed if name.startswith("s_")} == {"s_a", "s_b"}  # the first row named it wins
    assert value(views.samples, "s_a_total") == 1.0
    assert "s_a_created_total" not in views.samples
    probes = 3  # OpenMetrics, text, debug page: each skips the row once
    assert value(views.own, "sqlprobe_query_errors_total", target="db", metric="s", reason="name_clash") == probes


def test_mysqld_exporter_numbers_are_gos_parsefloat_out_of_range_and_non_ascii_digits_are_not_numbers(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    cells = {
        "big": "1e400",
        "small": "-1e400",
        "wide": "\uff11\uff12",
        "arabic": "\u0663",
        "inf": "+Inf",
        "ok": "12",
        "tiny": "1e-400",
    }
    sql = " union all ".join(f"select '{n}' as n, '{v}' as v" for n, v in cells.items())
    sets = {"s": {"s": _named(sql, numbers="mysqld_exporter")}}
    config = write_config(tmp_path, {"db": target(server.dsn, "s")}, sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    texts = dict(server.query(sql))
    # Go's strconv.ParseFloat: ASCII digits only, and ErrRange (the row dropped) past the largest float64.
    assert {name: value(views.samples, name) for name in views.samples if name.startswith("s_")} == {
        "s_inf": float(texts["inf"]),
        "s_ok": float(texts["ok"]),
        "s_tiny": 0.0,
    }
    dropped = value(views.own, "sqlprobe_query_errors_total", target="db", metric="s", reason="non_numeric_value")
    assert dropped == 2 * 4
