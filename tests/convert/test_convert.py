"""sqlprobe-convert: what it writes, what it lists as not converted, and sql_exporter's own examples."""

import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import load_config
from tests.convert.test_convert_query_exporter import CONVERT, convert, probed_series
from tests.helpers import Samples, client_for, parse_samples
from tests.paths import TESTS_DIR
from tests.servers import MariaDB

SQL_EXPORTER = TESTS_DIR / "peers" / "sql_exporter"
MARIADB_COLLECTORS = TESTS_DIR / "configs" / "sql_exporter_mariadb"

UNCONVERTIBLE = """\
builtin-metrics:
  query_latency: {buckets: [0.1, 1]}
databases:
  main db:
    dsn: mysql://monitor:in-the-input@db.example:3306/app
    connect-sql: ["set time_zone = '+00:00'"]
    labels: {env: prod}
  pg:
    dsn: {dialect: postgresql, user: monitor, password: !file pg-password, host: pg.example, database: app}
    connection-pool: {size: 3}
  fromenv:
    dsn: !env APP_DSN
  details:
    dsn: {dialect: mysql, user: monitor, password: !env APP_PASSWORD, host: db.example, database: app}
  mssql:
    dsn: mssql+pyodbc://u:p@h/db
metrics:
  latency: {type: histogram, buckets: [1, 2]}
  sessions: {type: gauge, labels: [user], expiration: 5m}
  hits: {type: counter, increment: true}
  rows: {type: counter}
queries:
  q1:
    databases: [main db, pg, fromenv, details, mssql]
    metrics: [sessions, latency]
    sql: select user, count(*) as sessions from t group by user
    interval: 2m
    timeout: 5
  q2:
    databases: [main db]
    metrics: [hits]
    sql: select 1 as hits
  q3:
    databases: [main db]
    metrics: [sessions, rows]
    schedule: "*/5 * * * *"
    sql: select 'x' as user, 1 as sessions, 2 as rows
"""


def test_what_has_no_equivalent_is_listed_with_its_key_path_and_the_rest_is_converted(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(UNCONVERTIBLE)
    (tmp_path / "pg-password").write_text("from-a-file\n")
    result = subprocess.run(
        [str(CONVERT), "query-exporter", str(config), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        env={"APP_PASSWORD": "never-written", "APP_DSN": "sqlite://"},
    )
    assert result.returncode == 0, result.stderr
    notes = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert notes == [
        "builtin-metrics: sqlprobe has its own metrics about queries (sqlprobe_query_duration_seconds, …)",
        "metrics.latency.type: sqlprobe exports gauges and counters, not histograms: not converted; select the bucket counts, sum and count from SQL as gauges or counters",
        "metrics.sessions.expiration: not needed: sqlprobe exports only the rows of the current probe",
        "metrics.hits.increment: sqlprobe does not add each run's result to a counter: not converted; select a running total from the database instead",
        "queries.q1.interval: became min_interval: 120s (a result is served again for that long; Prometheus's scrapes run the query)",
        "queries.q1.timeout: not converted: the target's timeout bounds the whole probe (default 10s, and the scrape timeout)",
        "queries.q2: feeds no gauge or counter, not converted",
        "queries.q3.schedule: not converted: Prometheus's scrape interval decides when sqlprobe runs a query; min_interval (seconds) serves a result again instead of running it every scrape",
        "databases.main db.connect-sql: not converted: sqlprobe runs no statements at connect: put session settings in the SQL or the DSN",
        "databases.main db: query 'q3' not run on it: its metric 'sessions' comes from query 'q1' there already (sqlprobe takes one query per metric and target: merge them with UNION ALL)",
        "databases.main db.dsn: driver mysql became mysql+pymysql (the driver sqlprobe ships)",
        "databases.main db.dsn: holds a password: better ${VAR} from the environment or password_file",
        "databases.main db: became target 'main_db' (sqlprobe's names take letters, digits, _ . : -)",
        "databases.pg.connection-pool: not converted: sqlprobe keeps 2 connections (+2 overflow) per target",
        "databases.pg.dsn: driver postgresql became postgresql+psycopg (the driver sqlprobe ships)",
        "databases.fromenv.dsn: kept as ${APP_DSN}: its value must use mysql+pymysql:// or postgresql+psycopg://",
        "databases.details.dsn: driver mysql became mysql+pymysql (the driver sqlprobe ships)",
        "databases.mssql.dsn: sqlprobe does not probe mssql databases: not converted",
    ]
    written = (tmp_path / "out" / "targets.yml").read_text()
    assert "never-written" not in written
    assert "from-a-file" not in written
    targets = yaml.safe_load(written)["targets"]
    assert targets["details"]["dsn"] == "mysql+pymysql://monitor:${APP_PASSWORD}@db.example/app"
    assert targets["fromenv"]["dsn"] == "${APP_DSN}"
    assert targets["pg"]["password_file"] == str(tmp_path / "pg-password")
    assert "mssql" not in targets
    # sqlprobe accepts the result, with the password read from the environment and from the file.
    config_loaded = load_config(
        tmp_path / "out" / "targets.yml",
        tmp_path / "out" / "queries.yml",
        {"APP_PASSWORD": "p@ss:word", "APP_DSN": "sqlite://"},
    )
    assert config_loaded.targets["details"].url.password == "p@ss:word"
    assert config_loaded.targets["pg"].url.password == "from-a-file"
    assert config_loaded.targets["main_db"].query_sets == ("q1",)


@pytest.mark.parametrize(
    ("exporter", "content", "expected"),
    [
        ("query-exporter", None, "sqlprobe-convert: cannot read {config}: No such file or directory"),
        (
            "query-exporter",
            "databases:\n  db:\n    dsn: mysql://u:hunter2-secret@h/db\n    labels: [unclosed\n",
            "sqlprobe-convert: {config} is not valid YAML at line 5: expected ',' or ']', but got '<stream end>'",
        ),
        (
            "query-exporter",
            "databases: !include config.yaml",
            "sqlprobe-convert: {config} includes {config}, which includes it again",
        ),
        (
            "query-exporter",
            "target: {data_source_name: 'mysql://u@h/db', collectors: [c]}",
            "sqlprobe-convert: {config} is not a query-exporter configuration: no databases, metrics, queries mapping",
        ),
        (
            "sql-exporter",
            "databases: {}\nmetrics: {}\nqueries: {}",
            "sqlprobe-convert: {config} is not a sql_exporter configuration: no target or jobs",
        ),
    ],
    ids=[
        "missing",
        "invalid-yaml",
        "includes-itself",
        "sql-exporter-config-as-query-exporter",
        "query-exporter-config-as-sql-exporter",
    ],
)
def test_input_it_cannot_read_exits_1_with_a_sentence_and_writes_nothing(
    tmp_path: Path, exporter: str, content: str | None, expected: str
) -> None:
    config = tmp_path / "config.yaml"
    if content is not None:
        config.write_text(content)
    result = convert(exporter, config, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr == expected.format(config=config) + "\n"
    assert "hunter2" not in result.stderr  # a YAML error never quotes the line: it may hold a password
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_files_are_replaced_only_with_force(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "databases: {db: {dsn: 'sqlite://'}}\nmetrics: {n: {type: gauge}}\nqueries: {q: {databases: [db], metrics: [n], sql: 'select 1 as n'}}\n"
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "queries.yml").write_text("# the user's own\n")
    refused = convert("query-exporter", config, tmp_path / "out")
    assert (refused.returncode, refused.stderr) == (
        1,
        f"sqlprobe-convert: {tmp_path / 'out' / 'queries.yml'} exists already: give --force to replace it, or another --out\n",
    )
    assert (tmp_path / "out" / "queries.yml").read_text() == "# the user's own\n"
    assert not (tmp_path / "out" / "targets.yml").exists()
    forced = subprocess.run(
        [str(CONVERT), "query-exporter", str(config), "--out", str(tmp_path / "out"), "--force"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forced.returncode == 0, forced.stderr
    assert load_config(tmp_path / "out" / "targets.yml", tmp_path / "out" / "queries.yml", {}).targets["db"]


def test_names_that_become_the_same_once_made_valid_stay_apart(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "databases:\n"
        "  'db 1': {dsn: 'sqlite://'}\n"
        "  db_1: {dsn: 'sqlite://'}\n"
        "metrics:\n  n: {type: gauge}\n  m: {type: gauge}\n"
        "queries:\n"
        "  'q 1': {databases: ['db 1', db_1], metrics: [n], sql: 'select 1 as n'}\n"
        "  q_1: {databases: ['db 1'], metrics: [m], sql: 'select 2 as m'}\n"
    )
    result = convert("query-exporter", config, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "  queries.q_1: became query set 'q_1_2': another query has the name 'q_1'" in result.stdout.splitlines()
    loaded = load_config(tmp_path / "out" / "targets.yml", tmp_path / "out" / "queries.yml", {})
    assert {name: target.query_sets for name, target in loaded.targets.items()} == {
        "db_1": ("q_1", "q_1_2"),
        "db_1_2": ("q_1",),
    }


def _collector_metrics(config: Path) -> dict[str, dict[str, Any]]:
    """Every metric of the collector files next to ``config``, read as sql_exporter reads them."""
    metrics = {}
    for pattern in yaml.safe_load(config.read_text()).get("collector_files") or ():
        for file in sorted(config.parent.glob(pattern)):
            collector = yaml.safe_load(file.read_text())
            queries = {query["query_name"]: query["query"] for query in collector.get("queries") or ()}
            for metric in collector["metrics"]:
                metrics[metric["metric_name"]] = {**metric, "sql": metric.get("query") or queries[metric["query_ref"]]}
    for collector in yaml.safe_load(config.read_text()).get("collectors") or ():
        queries = {query["query_name"]: query["query"] for query in collector.get("queries") or ()}
        for metric in collector["metrics"]:
            metrics[metric["metric_name"]] = {**metric, "sql": metric.get("query") or queries[metric["query_ref"]]}
    return metrics


@pytest.mark.parametrize(
    "example",
    ["documentation/sql_exporter.yml", "examples/mssql/sql_exporter.yml", "examples/postgres/sql_exporter.yml"],
)
def test_sql_exporters_documented_examples_convert_to_the_same_sql_labels_and_values(
    tmp_path: Path, example: str
) -> None:
    source = SQL_EXPORTER / example
    result = convert("sql-exporter", source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    queries = yaml.safe_load((tmp_path / "out" / "queries.yml").read_text())
    # sqlprobe accepts every query set, on a target that has them all.
    (tmp_path / "all.yml").write_text(
        yaml.safe_dump({"targets": {"all": {"dsn": "sqlite://", "query_sets": list(queries["query_sets"])}}})
    )
    load_config(tmp_path / "all.yml", tmp_path / "out" / "queries.yml", {})
    converted = {key: metric for metrics in queries["query_sets"].values() for key, metric in metrics.items()}
    expected = _collector_metrics(source)
    assert set(converted) == set(expected)
    for name, metric in expected.items():
        ours = converted[name]
        values = metric.get("values") or []
        assert ours["query"] == metric["sql"].strip(), name
        assert ours.get("labels", []) == metric.get("key_labels", []), name
        assert ours["type"] == metric["type"].lower(), name
        assert ours["description"] == metric["help"], name
        assert ours.get("static_labels", {}) == metric.get("static_labels", {}), name
        assert ours.get("static_value") == metric.get("static_value"), name
        assert ours.get("timestamp_value") == metric.get("timestamp_value"), name
        if len(values) == 1 and not metric.get("value_label"):
            assert ours["value"] == values[0], name
        else:
            assert (ours.get("values"), ours.get("value_label")) == ((values or None), metric.get("value_label")), name


def sql_exporter_series(metric: dict[str, Any], columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Samples:
    """The series sql_exporter makes of ``rows`` for ``metric`` (its metric.go: MetricFamily.Collect)."""
    name = metric["metric_name"]
    if metric["type"] == "counter" and not name.endswith("_total"):
        name += "_total"  # sqlprobe's one difference in naming (docs/migrating.md)
    static = dict(metric.get("static_labels") or {})
    series: dict[tuple[tuple[str, str], ...], float] = {}
    for row in rows:
        cells = dict(zip(columns, row, strict=True))
        labels = {label: "" if cells[label] is None else str(cells[label]) for label in metric.get("key_labels") or ()}
        for column in metric.get("values") or ():
            if cells[column] is None:
                continue  # NULL values are not exported
            if metric.get("value_label"):
                labels[metric["value_label"]] = column
            series[tuple(sorted({**labels, **static}.items()))] = float(cells[column])
        if metric.get("static_value") is not None:
            series[tuple(sorted({**labels, **static}.items()))] = float(metric["static_value"])
    return {name: series}


def test_a_sql_exporter_collector_gives_on_mariadb_the_series_sql_exporter_makes_of_the_same_rows(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    for file in MARIADB_COLLECTORS.iterdir():
        shutil.copy(file, tmp_path / file.name)
    config = tmp_path / "sql_exporter.yml"
    dsns = {f"dsn{index}": server.dsn.replace("mysql+pymysql://", "mysql://") for index, server in enumerate(fleet)}
    config.write_text(config.read_text().format(**dsns))
    result = convert("sql-exporter", config, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    sqlprobe_config = load_config(tmp_path / "out" / "targets.yml", tmp_path / "out" / "queries.yml", {})
    with client_for(sqlprobe_config) as client:
        ours = probed_series(client)
        texts = {name: client.get("/probe", params={"target": name}).text for name in ("db0", "db1")}
    expected: Samples = {}
    metrics = _collector_metrics(config)
    for server, name in zip(fleet, ("db0", "db1"), strict=True):
        with server.exporter_connection() as connection, connection.cursor() as cursor:
            for metric in metrics.values():
                cursor.execute(metric["sql"])
                columns = [column[0] for column in cursor.description]
                rows = cursor.fetchall()
                for sample_name, series in sql_exporter_series(metric, columns, rows).items():
                    for labels, value in series.items():
                        with_target = tuple(sorted({**dict(labels), "team": "stock"}.items()))
                        expected.setdefault(sample_name, {})[with_target] = value
                if metric.get("timestamp_value"):
                    # sql_exporter's Go driver reads a DATETIME as UTC; the sample carries it in milliseconds.
                    for row in rows:
                        cells = dict(zip(columns, row, strict=True))
                        stamp = int(cells["at"].replace(tzinfo=UTC).timestamp() * 1000)
                        line = f'items_fresh{{kind="{cells["kind"]}"}} {float(cells["n"])} {stamp}'
                        assert line in texts[name].splitlines()
    assert ours == expected
    assert set(ours) == {"items_stock", "items_qty_total", "items_price", "items_server_info", "items_fresh"}


def _on_mariadb(source: Path, directory: Path, dsn: str) -> Path:
    """A copy of sql_exporter's example ``source`` (with its collector files inline) whose targets are the MariaDB
    ``dsn`` and whose queries read the test schema instead, returning the columns its metrics read (label columns
    from kind and color, value columns from qty and price): so each metric definition meets real rows."""
    config = yaml.safe_load(source.read_text())
    if config.get("target"):
        config["target"]["data_source_name"] = dsn
    for job in config.get("jobs") or ():
        for static in job["static_configs"]:
            static["targets"] = dict.fromkeys(static["targets"], dsn)
    files = [
        file for pattern in config.pop("collector_files", None) or () for file in sorted(source.parent.glob(pattern))
    ]
    config["collectors"] = [yaml.safe_load(file.read_text()) for file in files] + list(config.get("collectors") or ())
    for collector in config["collectors"]:
        # The label and value columns each query (by name, or a metric's own) must return.
        reads: dict[str, tuple[set[str], set[str], list[bool]]] = {}
        for metric in collector["metrics"]:
            labels, values, one_row = reads.setdefault(
                metric.get("query_ref") or metric["metric_name"], (set(), set(), [False])
            )
            labels.update(metric.get("key_labels") or ())
            values.update(metric.get("values") or ())
            # A metric without key labels gets one series: its query returns one row (sql_exporter fails a
            # scrape that collects the same series twice).
            one_row[0] |= not metric.get("key_labels")
        for metric in collector["metrics"]:
            if "query" in metric:
                metric["query"] = _items_query(*reads[metric["metric_name"]])
        for query in collector.get("queries") or ():
            query["query"] = _items_query(*reads[query["query_name"]])
    directory.mkdir()
    (directory / "sql_exporter.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory / "sql_exporter.yml"


def _items_query(labels: set[str], values: set[str], one_row: list[bool]) -> str:
    selected = [f"concat(kind, '/', color, '/{number}') as `{column}`" for number, column in enumerate(sorted(labels))]
    selected += [f"qty * {number + 1} + price as `{column}`" for number, column in enumerate(sorted(values - labels))]
    return f"select {', '.join(selected)} from items order by kind, color{' limit 1' if one_row[0] else ''}"


@pytest.mark.parametrize(
    "example",
    ["documentation/sql_exporter.yml", "examples/mssql/sql_exporter.yml", "examples/postgres/sql_exporter.yml"],
)
def test_sql_exporters_documented_metric_definitions_give_on_mariadb_rows_the_series_sql_exporter_makes(
    tmp_path: Path, fleet: Sequence[MariaDB], example: str
) -> None:
    server = fleet[0]
    config = _on_mariadb(
        SQL_EXPORTER / example, tmp_path / "example", server.dsn.replace("mysql+pymysql://", "mysql://")
    )
    result = convert("sql-exporter", config, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    sqlprobe_config = load_config(tmp_path / "out" / "targets.yml", tmp_path / "out" / "queries.yml", {})
    expected: Samples = {}
    metrics = _collector_metrics(config)
    with server.exporter_connection() as connection, connection.cursor() as cursor:
        for metric in metrics.values():
            cursor.execute(metric["sql"])
            columns = [column[0] for column in cursor.description]
            for sample_name, series in sql_exporter_series(metric, columns, cursor.fetchall()).items():
                expected.setdefault(sample_name, {}).update(series)
    with client_for(sqlprobe_config) as client:
        for name in sqlprobe_config.targets:
            text = client.get("/probe", params={"target": name}).text
            ours = {key: series for key, series in parse_samples(text).items() if key in expected}
            served = {
                key for metric in sqlprobe_config.targets[name].metrics for key in (metric.name, f"{metric.name}_total")
            }
            assert ours == {key: series for key, series in expected.items() if key in served}, name
            assert "probe_success 1.0" in text.splitlines(), name
    assert len(expected) == len(metrics)


@pytest.mark.parametrize(
    ("exporter", "content"),
    [
        ("query-exporter", "databases: {}\nmetrics:\n  m: {type: gauge, labels: 5}\nqueries: {}"),
        (
            "query-exporter",
            "databases:\n  db: {dsn: {user: u, password: hunter2-secret}}\nmetrics:\n  m: {type: gauge}\nqueries:\n  q: {databases: [db], metrics: [m], sql: 'select 1 as m'}",
        ),
        (
            "query-exporter",
            "databases:\n  db: {dsn: {dialect: mysql, options: [1]}}\nmetrics:\n  m: {type: gauge}\nqueries:\n  q: {databases: [db], metrics: [m], sql: 'select 1 as m'}",
        ),
        (
            "query-exporter",
            "databases:\n  db: {dsn: 'mysql://u@h/d', labels: [a]}\nmetrics:\n  m: {type: gauge}\nqueries:\n  q: {databases: [db], metrics: [m], sql: 'select 1 as m'}",
        ),
        (
            "sql-exporter",
            "target: {data_source_name: 'mysql://u@h/d', collectors: 5}\ncollectors: [{collector_name: c, metrics: [5]}]",
        ),
        ("sql-exporter", "target: {data_source_name: 'mysql://u@h/d', collectors: [c]}\ncollector_files: 5"),
        ("sql-exporter", "global: 5\ntarget: {data_source_name: 'mysql://u@h/d', collectors: [c]}"),
        ("sql-exporter", "jobs: 5"),
    ],
    ids=[
        "qe-labels-int",
        "qe-dsn-no-dialect",
        "qe-options-list",
        "qe-db-labels-list",
        "se-collectors-int",
        "se-collector-files-int",
        "se-global-int",
        "se-jobs-int",
    ],
)
def test_a_value_of_the_wrong_shape_exits_1_with_a_sentence_not_a_traceback(
    tmp_path: Path, exporter: str, content: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(content)
    result = convert(exporter, config, tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"sqlprobe-convert: {config} is not a ")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_dollar_brace_in_a_sql_exporter_dsn_stays_literal_and_reads_no_environment_variable(tmp_path: Path) -> None:
    # sql_exporter reads its DSN as written (no ${VAR} expansion); sqlprobe expands ${VAR} in a DSN, so a literal
    # one copied as such would send the variable's value to the database as the password.
    config = tmp_path / "sql_exporter.yml"
    config.write_text(
        "target:\n"
        "  data_source_name: 'mysql://u:p${SQLPROBE_TEST_SECRET}q@h:3306/d'\n"
        "  collectors: [c]\n"
        "collectors:\n"
        "  - collector_name: c\n"
        "    metrics:\n"
        "      - {metric_name: m, type: gauge, help: h, values: [v], query: 'select 1 as v'}\n"
    )
    result = convert("sql-exporter", config, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    environ = {"SQLPROBE_TEST_SECRET": "from-the-environment"}
    loaded = load_config(tmp_path / "out" / "targets.yml", tmp_path / "out" / "queries.yml", environ)
    (target,) = loaded.targets.values()
    assert target.url.password == "p${SQLPROBE_TEST_SECRET}q"
