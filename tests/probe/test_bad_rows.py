"""Rows that cannot become samples are skipped and counted; the rest of the scrape stays intact."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, write_config
from tests.servers import MariaDB

READINGS_SQL = "select sensor, reading from readings order by id"


@pytest.fixture
def readings(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A table of readings with a NULL, a non-number, a numeric string and a repeated sensor."""
    server = fleet[0]
    server.execute(
        "create table probe.readings (id int primary key, sensor varchar(20), reading varchar(20))",
        "insert into probe.readings values "
        "(1, 'a', '1.5'), (2, 'b', null), (3, 'c', 'broken'), (4, 'a', '9'), (5, 'd', '42'), (6, 'e', '-3e2')",
    )
    yield server
    server.execute("drop table probe.readings")


def _expected(rows: list[tuple[str, str | None]]) -> dict[str, float]:
    """What a user expects from these rows: numeric readings, the first one per sensor."""
    expected: dict[str, float] = {}
    for sensor, reading in rows:
        try:
            number = float(reading) if reading is not None else None
        except ValueError:
            number = None
        if number is not None:
            expected.setdefault(sensor, number)
    return expected


def test_null_non_numeric_and_duplicate_rows_are_skipped_and_counted(tmp_path: Path, readings: MariaDB) -> None:
    query_sets = {"sensors": {"reading": metric(READINGS_SQL, "reading", "sensor")}}
    config = write_config(tmp_path, {"db": target(readings.dsn, "sensors")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    rows = readings.query(READINGS_SQL)
    assert {labels[0][1]: number for labels, number in views.samples["reading"].items()} == _expected(rows)
    # The metric itself succeeded: bad rows are the data's problem, not the query's.
    assert value(views.samples, "sqlprobe_query_success", metric="reading") == 1.0
    assert value(views.samples, "probe_success") == 1.0
    assert "skipped rows: null_value=1, non_numeric_value=1, duplicate_labels=1" in views.debug
    for reason in ("null_value", "non_numeric_value", "duplicate_labels"):
        assert value(views.own, "sqlprobe_query_errors_total", target="db", metric="reading", reason=reason) == 2.0


@pytest.mark.parametrize(
    ("labels", "value_column", "message"),
    [
        (["sensor"], "nope", "value column 'nope' is not in the result (columns: sensor, reading)"),
        (["missing_label"], "reading", "label column 'missing_label' is not in the result (columns: sensor, reading)"),
    ],
)
def test_missing_column_fails_that_metric_with_an_error_naming_it(
    tmp_path: Path, readings: MariaDB, labels: list[str], value_column: str, message: str
) -> None:
    query_sets = {
        "sensors": {
            "broken": metric(READINGS_SQL, value_column, *labels),
            "fine": metric(READINGS_SQL, "reading", "sensor"),
        }
    }
    config = write_config(tmp_path, {"db": target(readings.dsn, "sensors")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "sqlprobe_query_success", metric="broken") == 0.0
    assert value(views.samples, "sqlprobe_query_success", metric="fine") == 1.0
    assert "broken" not in views.samples
    assert len(views.samples["fine"]) == len(_expected(readings.query(READINGS_SQL)))
    assert value(views.samples, "probe_success") == 0.0
    assert f"failed (missing_column): {message}" in views.debug
    assert value(views.own, "sqlprobe_query_errors_total", target="db", metric="broken", reason="missing_column") == 2.0


def test_columns_differing_only_in_case_fail_the_metrics_reading_them_with_both_names(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    sql = "select 1 as v, 2 as V, 3 as other"
    query_sets = {"cased": {"reads_v": metric(sql, "v"), "reads_other": metric(sql, "other")}}
    config = write_config(tmp_path, {"db": target(fleet[0].dsn, "cased")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    # The metric that reads v cannot know which of the two was meant; the one that reads other can.
    assert "reads_v" not in views.samples
    assert value(views.samples, "reads_other") == float(fleet[0].query(sql)[0][2])
    assert value(views.samples, "sqlprobe_query_success", metric="reads_v") == 0.0
    message = (
        "value column 'v' matches both 'v' and 'V' in the result (column names are compared ignoring case): "
        "rename one in the SQL"
    )
    assert f"failed (ambiguous_column): {message}" in views.debug
    assert (
        value(views.own, "sqlprobe_query_errors_total", target="db", metric="reads_v", reason="ambiguous_column") == 2.0
    )


def test_a_row_with_a_label_value_over_max_label_length_is_skipped_and_counted(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select repeat('x', 1025) as name, 1 as n union all select repeat('y', 1024), 2 union all select 'z', 3"
    query_sets = {
        "long": {"named": metric(sql, "n", "name"), "short": {**metric(sql, "n", "name"), "max_label_length": 1}}
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "long")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    rows = server.query(sql)
    # Up to 1 KiB by default; a row over the limit is skipped whole rather than cut short.
    assert {labels[0][1]: number for labels, number in views.samples["named"].items()} == {
        name: float(number) for name, number in rows if len(name) <= 1024
    }
    assert {labels[0][1]: number for labels, number in views.samples["short"].items()} == {"z": 3.0}
    assert value(views.samples, "probe_success") == 1.0
    assert "metric named: 2 samples, skipped rows: label_too_long=1" in views.debug
    assert "metric short: 1 samples, skipped rows: label_too_long=2" in views.debug
    assert value(views.own, "sqlprobe_query_errors_total", target="db", metric="named", reason="label_too_long") == 2.0


def test_label_values_with_quotes_newlines_and_unicode_give_valid_exposition(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = (
        "select 'say \"hi\"' as name, 1 as n union all select 'back\\\\slash', 2 "
        "union all select 'two\\nlines', 3 union all select 'café ✓', 4 union all select null, 5"
    )
    query_sets = {
        "odd": {"odd_labels": {"query": sql, "type": "gauge", "description": "d", "labels": ["name"], "value": "n"}}
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "odd")}, query_sets, namespace="")
    with client_for(config) as client:
        text = client.get("/probe", params={"target": "db"}).text
    expected = {("" if name is None else name): float(number) for name, number in server.query(sql)}
    assert {labels[0][1]: number for labels, number in parse_samples(text)["odd_labels"].items()} == expected


def test_rows_beyond_max_rows_are_cut_and_counted_and_the_default_is_1000(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    many = (
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < {count}) select i, i * 2 as v from n"
    )
    rows = 1000 + 7
    query_sets = {
        "big": {
            "capped": {**metric(many.format(count=10), "v", "i"), "max_rows": 4},
            "defaulted": metric(many.format(count=rows), "v", "i"),
        }
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "big")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    direct = {i: float(v) for i, v in server.query(many.format(count=10))}
    # The first max_rows rows, in the order the SQL returns them.
    assert {int(labels[0][1]): number for labels, number in views.samples["capped"].items()} == dict(
        list(direct.items())[:4]
    )
    assert len(views.samples["defaulted"]) == 1000
    assert value(views.samples, "probe_success") == 1.0
    # One row past max_rows is read, to know the result was cut; the rest is never read, so never counted.
    assert "skipped rows: max_rows=1" in views.debug
    assert len(server.query(many.format(count=rows))) > 1000
    # Counted once per probe, and probe_views probes twice (the probe, then its debug page).
    for name in ("capped", "defaulted"):
        assert value(views.own, "sqlprobe_query_errors_total", target="db", metric=name, reason="max_rows") == 2.0
