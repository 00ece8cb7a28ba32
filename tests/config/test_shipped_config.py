"""The targets.yml and queries.yml that ship with sqlprobe work as the README promises."""

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from app.config import load_config
from tests.helpers import client_for, parse_samples, value
from tests.paths import ROOT_DIR
from tests.servers import EXPORTER_USER, MariaDB

ROOT = ROOT_DIR
MYSQL_SETS = ("mysql_overview", "processlist")


def _direct(sql: str, labels: Sequence[str], value_column: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples ``sql`` gives when run directly on a fresh in-memory SQLite database, as the demo target has."""
    with closing(sqlite3.connect(":memory:")) as db:
        cursor = db.execute(sql)
        columns = [column[0] for column in cursor.description]
        return {
            tuple(sorted((label, str(row[columns.index(label)])) for label in labels)): float(
                row[columns.index(value_column)]
            )
            for row in cursor.fetchall()
        }


def test_demo_target_serves_live_non_zero_sqlite_metrics_with_no_mysql_at_hand(tmp_path: Path) -> None:
    config = load_config(ROOT / "targets.yml", ROOT / "queries.yml", environ={"MYSQL_EXPORTER_PASSWORD": ""})
    metrics = config.query_sets["sqlite_demo"]
    with client_for(config) as client:
        for _ in range(3):  # the values follow the clock: a second may tick between the probe and the direct runs
            before = {m.key: _direct(m.sql, m.labels, m.values[0]) for m in metrics}
            samples = parse_samples(client.get("/probe", params={"target": "demo"}).text)
            after = {m.key: _direct(m.sql, m.labels, m.values[0]) for m in metrics}
            if before == after:
                break
    assert value(samples, "probe_success") == 1.0
    assert before == after, "the clock ticked during every try"
    for metric in metrics:
        sample_name = f"{metric.name}_total" if metric.kind == "counter" else metric.name
        assert samples[sample_name] == after[metric.key], metric.key
        assert samples[sample_name], metric.key
        assert all(found > 0 for found in samples[sample_name].values()), metric.key
    assert set(samples["query_exporter_demo_orders_total"]) == {(("region", r),) for r in ("apac", "eu", "us")}


def test_shipped_mysql_query_sets_succeed_on_mariadb_with_the_values_of_their_sql(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    (tmp_path / "targets.yml").write_text(
        f'targets:\n  db:\n    dsn: "{server.dsn}"\n    query_sets: [{", ".join(MYSQL_SETS)}]\n'
    )
    config = load_config(tmp_path / "targets.yml", ROOT / "queries.yml", environ={})
    metrics = [metric for name in MYSQL_SETS for metric in config.query_sets[name]]
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert {metric.key: value(samples, "sqlprobe_query_success", metric=metric.key) for metric in metrics} == {
            metric.key: 1.0 for metric in metrics
        }
        assert value(samples, "probe_success") == 1.0
        # Each metric has at least one sample, from rows its own SQL gives when run directly.
        for metric in metrics:
            sample_name = f"{metric.name}_total" if metric.kind == "counter" else metric.name
            assert samples.get(sample_name), f"{metric.key} produced no samples"
        (max_connections,) = server.query("select @@max_connections")[0]
        assert value(samples, "query_exporter_mysql_max_connections") == float(max_connections)
        # Now, as during the probe, the exporter's one pooled session is the only one of its user.
        sql = next(m.sql for m in config.query_sets["processlist"] if m.key == "process_count_by_user")
        by_user = {user: float(count) for user, count in server.root_query(sql)}
        assert value(samples, "query_exporter_process_count_by_user", user=EXPORTER_USER) == by_user[EXPORTER_USER]
        threads = {
            row[0]: float(row[1]) for row in server.query(next(m.sql for m in metrics if m.key == "mysql_threads"))
        }
        assert set(samples["query_exporter_mysql_threads"]) == {(("variable_name", name),) for name in threads}
