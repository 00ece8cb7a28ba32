"""Metrics beyond one value column: several values, static labels, info metrics, timestamps and parameters."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers import client_for, parse_samples, target, value, wait_until, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def shape(query: str, **keys: Any) -> dict[str, Any]:
    """A queries.yml metric block with the given keys besides query, type and description."""
    return {"query": query, "type": "gauge", "description": "test metric", **keys}


def probe(
    tmp_path: Path, server: MariaDB, metrics: dict[str, Any], accept: str | None = None, debug: bool = False
) -> str:
    """The exposition text (or debug page) of one probe of ``server`` with the query set ``metrics``."""
    config = write_config(tmp_path, {"db": target(server.dsn, "shapes")}, {"shapes": metrics})
    with client_for(config) as client:
        headers = {"Accept": accept} if accept else {}
        params = {"target": "db", "debug": "true"} if debug else {"target": "db"}
        response = client.get("/probe", params=params, headers=headers)
    assert response.status_code == 200
    return response.text


def test_values_give_one_sample_per_listed_column_labelled_with_its_name(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    sql = "select kind, sum(qty) as qty, sum(price) as price, sum(qty * price) as worth from items group by kind"
    metrics = {
        "stock": shape(sql, labels=["kind"], values=["qty", "worth"]),
        "stock_by_field": shape(sql, labels=["kind"], values=["price"], value_label="field"),
    }
    samples = parse_samples(probe(tmp_path, server, metrics))
    rows = server.query(sql)
    assert len(samples["query_exporter_stock"]) == 2 * len(rows)
    for kind, qty, price, worth in rows:
        assert value(samples, "query_exporter_stock", kind=kind, column="qty") == float(qty)
        assert value(samples, "query_exporter_stock", kind=kind, column="worth") == float(worth)
        assert value(samples, "query_exporter_stock_by_field", kind=kind, field="price") == float(price)
    assert value(samples, "probe_success") == 1.0


def test_a_null_in_one_value_column_skips_that_sample_only(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "select kind, sum(qty) as qty, if(kind = 'nut', null, count(*)) as n from items group by kind"
    config = write_config(
        tmp_path,
        {"db": target(server.dsn, "shapes")},
        {"shapes": {"stock": shape(sql, labels=["kind"], values=["qty", "n"])}},
    )
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
    rows = server.query(sql)
    expected = {(kind, "qty"): float(qty) for kind, qty, _ in rows} | {
        (kind, "n"): float(n) for kind, _, n in rows if n is not None
    }
    assert {
        (dict(labels)["kind"], dict(labels)["column"]): v for labels, v in samples["query_exporter_stock"].items()
    } == expected
    assert "metric query_exporter_stock (values qty, n labelled column): 5 samples, skipped rows: null_value=1" in debug
    assert value(samples, "sqlprobe_query_success", metric="stock") == 1.0


def test_static_labels_are_added_to_every_sample(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "select kind, sum(qty) as qty from items group by kind"
    metrics = {"qty": shape(sql, labels=["kind"], value="qty", static_labels={"team": "stock", "tier": "1"})}
    samples = parse_samples(probe(tmp_path, server, metrics))
    assert samples["query_exporter_qty"] == {
        (("kind", kind), ("team", "stock"), ("tier", "1")): float(qty) for kind, qty in server.query(sql)
    }


def test_static_value_makes_an_info_metric_whose_labels_carry_the_data(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select version() as version, @@version_comment as edition"
    metrics = {
        "server_info": shape(sql, labels=["version", "edition"], static_value=1, static_labels={"source": "sql"})
    }
    text = probe(tmp_path, server, metrics)
    debug = probe(tmp_path, server, metrics, debug=True)
    assert "  metric query_exporter_server_info (static value 1; static labels source='sql'): 1 samples" in debug
    ((version, edition),) = server.query(sql)
    assert parse_samples(text)["query_exporter_server_info"] == {
        (("edition", edition), ("source", "sql"), ("version", version)): 1.0
    }


def test_timestamp_value_stamps_samples_in_both_formats_and_rows_without_one_keep_none(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    # Times as a DATETIME column, and as Unix seconds with a fraction; one row of each has none.
    datetimes = "select 'a' as source, 1 as n, timestamp('2026-11-01 12:00:00') as at union all select 'c', 3, null"
    # (The time column first: its position is 0.)
    seconds = "select 1793534460.25 as at, 'b' as source, 2 as n union all select null, 'd', 4"
    a_date = "select 'e' as source, 5 as n, date('2026-11-01') as at"
    metrics = {
        "fresh_date": shape(a_date, labels=["source"], value="n", timestamp_value="at"),
        "fresh": shape(datetimes, labels=["source"], value="n", timestamp_value="at"),
        "fresh_seconds": shape(seconds, labels=["source"], value="n", timestamp_value="at"),
    }
    # Seconds since the epoch computed by the server from the same values (DATETIME taken as UTC).
    ((a_seconds,),) = server.query(
        "select timestampdiff(second, '1970-01-01 00:00:00', timestamp('2026-11-01 12:00:00'))"
    )
    ((e_seconds,),) = server.query("select timestampdiff(second, '1970-01-01', date('2026-11-01'))")
    text_lines = probe(tmp_path, server, metrics).splitlines()
    assert f'query_exporter_fresh_date{{source="e"}} 5.0 {e_seconds * 1000}' in text_lines
    assert f'query_exporter_fresh{{source="a"}} 1.0 {a_seconds * 1000}' in text_lines
    assert 'query_exporter_fresh_seconds{source="b"} 2.0 1793534460250' in text_lines
    assert 'query_exporter_fresh{source="c"} 3.0' in text_lines
    assert 'query_exporter_fresh_seconds{source="d"} 4.0' in text_lines
    openmetrics_lines = probe(tmp_path, server, metrics, OPENMETRICS).splitlines()
    assert f'query_exporter_fresh{{source="a"}} 1.0 {float(a_seconds)}' in openmetrics_lines
    assert 'query_exporter_fresh_seconds{source="b"} 2.0 1793534460.25' in openmetrics_lines
    assert 'query_exporter_fresh{source="c"} 3.0' in openmetrics_lines
    assert 'query_exporter_fresh_seconds{source="d"} 4.0' in openmetrics_lines


def test_a_timestamp_that_is_no_time_skips_its_row(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "select 'a' as source, 1 as n, 'soon' as at union all select 'b', 2, 1793534460"
    config = write_config(
        tmp_path,
        {"db": target(server.dsn, "shapes")},
        {"shapes": {"fresh": shape(sql, labels=["source"], value="n", timestamp_value="at")}},
    )
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        own = parse_samples(client.get("/metrics").text)
    assert 'query_exporter_fresh{source="b"} 2.0 1793534460000' in text.splitlines()
    assert 'source="a"' not in text
    assert "metric query_exporter_fresh (timestamps from at): 1 samples, skipped rows: invalid_timestamp=1" in debug
    assert value(own, "sqlprobe_query_errors_total", target="db", metric="fresh", reason="invalid_timestamp") >= 1.0


def test_parameters_run_the_query_once_per_set_and_the_rows_are_their_union(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    # A % in the SQL, and a value with a quote: both reach the server intact because the driver binds the values.
    sql = "select :kind as kind, count(*) as n, coalesce(sum(qty), 0) as qty from items where kind = :kind and color like '%e%'"
    sets = [{"kind": "bolt"}, {"kind": "nut"}, {"kind": "O'Brien"}]
    metrics = {"by_kind": shape(sql, labels=["kind"], values=["n", "qty"], parameters=sets)}
    config = write_config(tmp_path, {"db": target(server.dsn, "shapes")}, {"shapes": metrics})
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
    expected = {}
    for kind in ("bolt", "nut", "O''Brien"):
        ((name, n, qty),) = server.query(sql.replace(":kind", f"'{kind}'"))
        expected[(("column", "n"), ("kind", name))] = float(n)
        expected[(("column", "qty"), ("kind", name))] = float(qty)
    assert samples["query_exporter_by_kind"] == expected
    assert "  run once per parameter set (3), rows are the union:" in debug
    assert '    :kind="O\'Brien"' in debug
    assert value(samples, "probe_success") == 1.0


def test_the_matrix_form_runs_every_combination_under_group__name(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = (
        "select :kind__name as kind, :color__name as color, count(*) as n from items "
        "where kind = :kind__name and color = :color__name"
    )
    matrix = {"kind": [{"name": "bolt"}, {"name": "nut"}], "color": [{"name": "red"}, {"name": "blue"}]}
    samples = parse_samples(
        probe(tmp_path, server, {"pairs": shape(sql, labels=["kind", "color"], value="n", parameters=matrix)})
    )
    expected = {}
    for kind in ("bolt", "nut"):
        for color in ("red", "blue"):
            ((_, _, n),) = server.query(sql.replace(":kind__name", f"'{kind}'").replace(":color__name", f"'{color}'"))
            expected[(("color", color), ("kind", kind))] = float(n)
    assert samples["query_exporter_pairs"] == expected


def test_without_parameters_percent_and_colon_words_reach_the_server_as_written(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select ':kind 100%' as text, count(*) as n from items where color like '%e%'"
    samples = parse_samples(probe(tmp_path, server, {"odd": shape(sql, labels=["text"], value="n")}))
    ((text, n),) = server.query(sql)
    assert samples["query_exporter_odd"] == {(("text", text),): float(n)}
    assert text == ":kind 100%"


def test_parameters_bind_through_sqlite_and_postgresql_drivers_too(tmp_path: Path, postgres: PostgreSQL) -> None:
    # SQLite's driver takes ? placeholders in order, PostgreSQL's %(name)s: each gets its own style.
    sqlite_sql = "select :b as b, :a as a, :a + :b as n"
    # The matrix form names the parameter schema__x; cast() because :name::text would not be a parameter.
    postgres_sql = (
        "select cast(:schema__x as text) as schema_name, count(*) as n from information_schema.tables "
        "where table_schema = :schema__x and table_name like '%'"
    )
    query_sets = {
        "lite": {
            "sum": shape(sqlite_sql, labels=["a", "b"], value="n", parameters=[{"a": 1, "b": 2}, {"a": 3, "b": 4}])
        },
        "pg": {
            "tables": shape(postgres_sql, labels=["schema_name"], value="n", parameters={"schema": [{"x": "public"}]})
        },
    }
    config = write_config(tmp_path, {"lite": target("sqlite://", "lite"), "pg": target(postgres.dsn, "pg")}, query_sets)
    with client_for(config) as client:
        lite = parse_samples(client.get("/probe", params={"target": "lite"}).text)
        pg = parse_samples(client.get("/probe", params={"target": "pg"}).text)
    assert lite["query_exporter_sum"] == {(("a", "1"), ("b", "2")): 3.0, (("a", "3"), ("b", "4")): 7.0}
    ((schema, n),) = postgres.query(postgres_sql.replace(":schema__x", "'public'"))
    assert pg["query_exporter_tables"] == {(("schema_name", schema),): float(n)}
    assert value(pg, "probe_success") == 1.0


def test_a_run_of_parameter_sets_past_the_deadline_times_out_and_its_statement_is_stopped(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select :s as s, sleep(:s) as n"
    metrics = {"slow": shape(sql, labels=["s"], value="n", parameters=[{"s": 0}, {"s": 30}, {"s": 0}])}
    config = write_config(tmp_path, {"db": target(server.dsn, "shapes", timeout="1s")}, {"shapes": metrics})
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert value(samples, "probe_success") == 0.0
        assert value(samples, "sqlprobe_query_success", metric="slow") == 0.0
        own = parse_samples(client.get("/metrics").text)
        assert value(own, "sqlprobe_query_errors_total", target="db", metric="slow", reason="timeout") == 1.0
        # The second set's statement was stopped on the server, not left sleeping for 30 s.
        assert wait_until(
            lambda: not [s for s in server.exporter_sessions() if s[2] and "sleep" in s[2]], seconds=10
        ), server.exporter_sessions()


def test_metrics_with_the_same_sql_and_other_parameters_keep_their_own_results_for_min_interval(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    sql = "select :kind as kind, sum(qty) as qty from items where kind = :kind"
    metrics = {
        "bolts": shape(sql, labels=["kind"], value="qty", parameters=[{"kind": "bolt"}], min_interval="1h"),
        "nuts": shape(sql, labels=["kind"], value="qty", parameters=[{"kind": "nut"}], min_interval="1h"),
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "shapes")}, {"shapes": metrics})
    with client_for(config) as client:
        first = parse_samples(client.get("/probe", params={"target": "db"}).text)
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
        second = parse_samples(client.get("/probe", params={"target": "db"}).text)
    for kind, name in (("bolt", "query_exporter_bolts"), ("nut", "query_exporter_nuts")):
        ((_, qty),) = server.query(sql.replace(":kind", f"'{kind}'"))
        assert first[name] == second[name] == {(("kind", kind),): float(qty)}
    assert debug.count("  not run: the result of") == 2


def test_hostile_parameter_values_come_back_as_data_on_every_driver(
    tmp_path: Path, fleet: Sequence[MariaDB], postgres: PostgreSQL
) -> None:
    # Quotes, backslashes, % and placeholders of every driver style in a value: bound, never pasted into the SQL.
    hostile = "x\\' or 1=1 -- %s %% %(v)s ? $1 :v '' \\"
    sets = [{"v": hostile}]
    mysql_sql = "select :v as v, count(*) as n from items where kind = :v or :v = 'x'"
    pg_sql = "select cast(:v as text) as v, 1 as n where cast(:v as text) <> 'x'"
    lite_sql = "select :v as v, 1 as n"
    query_sets = {
        "my": {"m": shape(mysql_sql, labels=["v"], value="n", parameters=sets)},
        "pg": {"m": shape(pg_sql, labels=["v"], value="n", parameters=sets)},
        "lite": {"m": shape(lite_sql, labels=["v"], value="n", parameters=sets)},
    }
    targets = {
        "my": target(fleet[0].dsn, "my"),
        "pg": target(postgres.dsn, "pg"),
        "lite": target("sqlite://", "lite"),
    }
    config = write_config(tmp_path, targets, query_sets)
    with client_for(config) as client:
        answers = {name: parse_samples(client.get("/probe", params={"target": name}).text) for name in targets}
    for name, samples in answers.items():
        assert samples["query_exporter_m"] == {(("v", hostile),): 0.0 if name == "my" else 1.0}, name


def test_a_timestamp_past_what_the_formats_can_hold_skips_its_row_and_the_scrape_stays_valid(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    # Unix seconds whose milliseconds overflow int64: the text format could not say them, Prometheus would
    # reject the whole scrape ("expected integer as timestamp").
    server = fleet[0]
    sql = "select 'a' as source, 1 as n, 1e20 as at union all select 'b', 2, 1793534460"
    text = probe(tmp_path, server, {"fresh": shape(sql, labels=["source"], value="n", timestamp_value="at")})
    assert 'query_exporter_fresh{source="b"} 2.0 1793534460000' in text.splitlines()
    assert 'source="a"' not in text
