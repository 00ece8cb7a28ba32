"""Probes of real MariaDB servers answer with the values their SQL gives."""

from collections.abc import Sequence
from pathlib import Path

from tests.helpers import ITEMS_SET, client_for, parse_samples, target, value, write_config
from tests.servers import MariaDB


def test_each_target_reports_the_values_its_sql_gives(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    config = write_config(
        tmp_path, {server.name: target(server.dsn, "items") for server in fleet}, {"items": ITEMS_SET}
    )
    with client_for(config) as client:
        for server in fleet:
            response = client.get("/probe", params={"target": server.name})
            assert response.status_code == 200
            samples = parse_samples(response.text)
            for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"]):
                assert value(samples, "query_exporter_qty_by_kind", kind=kind) == float(qty)
            prices = server.query(ITEMS_SET["price"]["query"])
            assert len(samples["query_exporter_price"]) == len(prices)
            for kind, color, price in prices:
                assert value(samples, "query_exporter_price", kind=kind, color=color) == float(price)
            assert value(samples, "probe_success") == 1.0
            assert value(samples, "sqlprobe_query_success", metric="price") == 1.0


def test_servers_with_different_data_give_different_values(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    config = write_config(tmp_path, {s.name: target(s.dsn, "items") for s in fleet}, {"items": ITEMS_SET})
    with client_for(config) as client:
        totals = [
            sum(
                parse_samples(client.get("/probe", params={"target": s.name}).text)[
                    "query_exporter_qty_by_kind"
                ].values()
            )
            for s in fleet
        ]
    assert totals[0] != totals[1]
    assert totals == [float(s.query("select sum(qty) from items")[0][0]) for s in fleet]


def test_counter_is_exposed_with_total_suffix_and_counter_type(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
    assert "# TYPE query_exporter_items_created_total counter" in text
    (count,) = server.query(ITEMS_SET["items_created"]["query"])[0]
    assert value(parse_samples(text), "query_exporter_items_created_total") == float(count)


def test_namespace_prefixes_metric_names_and_empty_namespace_leaves_them_bare(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    for namespace, name in [("shop", "shop_qty_by_kind"), ("", "qty_by_kind")]:
        config = write_config(tmp_path, {"db": target(server.dsn, "items")}, {"items": ITEMS_SET}, namespace=namespace)
        with client_for(config) as client:
            samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert name in samples


def test_metrics_with_the_same_sql_share_one_execution(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    # A session variable counts executions on the probe's connection: one run gives both metrics the same value.
    counting_sql = "select @runs := coalesce(@runs, 0) + 1 as runs"
    query_sets = {
        "counting": {
            "first": {"query": counting_sql, "type": "gauge", "description": "d", "value": "runs"},
            "second": {"query": counting_sql, "type": "gauge", "description": "d", "value": "runs"},
            "other": {"query": counting_sql + " ", "type": "gauge", "description": "d", "value": "runs"},
            "different": {
                "query": counting_sql.replace("1 as", "1 as  "),
                "type": "gauge",
                "description": "d",
                "value": "runs",
            },
        }
    }
    config = write_config(tmp_path, {"db": target(fleet[0].dsn, "counting")}, query_sets, namespace="")
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    # Same text (surrounding whitespace aside): one run. Different text: a run of its own.
    assert value(samples, "first") == value(samples, "second") == value(samples, "other")
    assert {value(samples, "first"), value(samples, "different")} == {1.0, 2.0}


def test_query_set_parameter_restricts_the_probe_to_those_sets(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    query_sets = {
        "items": ITEMS_SET,
        "version": {
            "server_info": {
                "query": "select version() as version, 1 as info",
                "type": "gauge",
                "description": "server version",
                "labels": ["version"],
                "value": "info",
            }
        },
    }
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "items", "version")}, query_sets)
    with client_for(config) as client:
        both = parse_samples(client.get("/probe", params={"target": "db"}).text)
        only = parse_samples(client.get("/probe", params={"target": "db", "query_set": "version"}).text)
        repeated = parse_samples(
            client.get("/probe", params=[("target", "db"), ("query_set", "version"), ("query_set", "items")]).text
        )
    (version,) = server.query("select version()")[0]
    assert value(only, "query_exporter_server_info", version=version) == 1.0
    assert "query_exporter_qty_by_kind" in both
    assert "query_exporter_qty_by_kind" not in only
    assert set(only["sqlprobe_query_success"]) == {(("metric", "server_info"),)}
    assert set(repeated) == set(both)


def test_numeric_strings_from_show_status_become_values(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "show global variables like 'max_connections'"
    query_sets = {"vars": {"max_conn": {"query": sql, "type": "gauge", "description": "d", "value": "Value"}}}
    config = write_config(tmp_path, {"db": target(server.dsn, "vars")}, query_sets, namespace="")
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "max_conn") == float(server.query(sql)[0][1])


def test_time_values_become_seconds(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "select sec_to_time(5400 + 2.5) as age"
    query_sets = {"ages": {"age": {"query": sql, "type": "gauge", "description": "d", "value": "age"}}}
    config = write_config(tmp_path, {"db": target(server.dsn, "ages")}, query_sets, namespace="")
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    (seconds,) = server.query("select time_to_sec(sec_to_time(5400 + 2.5))")[0]
    assert value(samples, "age") == float(seconds)


def test_bit_columns_are_numbers(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    server.execute(
        "create or replace table probe.flags (name varchar(10), enabled bit(1), mask bit(12), wide bit(64))",
        "insert into probe.flags values ('a', b'1', b'101000000101', b'1' << 63), ('b', b'0', b'0', b'0')",
    )
    sql = "select name as flag, enabled, mask, wide from flags"
    query_sets = {
        "bits": {
            "enabled": {"query": sql, "type": "gauge", "description": "d", "labels": ["flag"], "value": "enabled"},
            "mask": {"query": sql, "type": "gauge", "description": "d", "labels": ["flag"], "value": "mask"},
            "wide": {"query": sql, "type": "gauge", "description": "d", "labels": ["flag", "enabled"], "value": "wide"},
        }
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "bits")}, query_sets)
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
    samples = parse_samples(text)
    assert value(samples, "probe_success") == 1.0
    for flag, enabled, mask, wide in server.query(sql):  # bytes, big-endian, as the server sends BIT
        number = int.from_bytes(enabled, "big")
        assert value(samples, "query_exporter_enabled", flag=flag) == float(number)
        assert value(samples, "query_exporter_mask", flag=flag) == float(int.from_bytes(mask, "big"))
        # As a label a BIT cell is its number too, not a control character.
        assert value(samples, "query_exporter_wide", flag=flag, enabled=str(number)) == float(
            int.from_bytes(wide, "big")
        )
