"""The targets.yml and queries.yml that ship with sqlprobe work as the README promises."""

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.config import load_config
from tests.helpers import client_for, parse_samples, value
from tests.servers import EXPORTER_USER, MariaDB

ROOT = Path(__file__).parent.parent
MYSQL_SETS = ("mysql_overview", "processlist")


def test_demo_target_serves_sqlite_metrics_with_no_mysql_at_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo's SQLite file is created in the working directory
    config = load_config(ROOT / "targets.yml", ROOT / "queries.yml", environ={"MYSQL_EXPORTER_PASSWORD": ""})
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "demo"}).text)
    assert value(samples, "probe_success") == 1.0
    # Every demo metric carries exactly the rows its SQL gives when run directly on the same file.
    with sqlite3.connect(tmp_path / "demo.sqlite") as db:
        for metric in config.query_sets["sqlite_demo"]:
            cursor = db.execute(metric.sql)
            columns = [column[0] for column in cursor.description]
            expected = {
                tuple(sorted((label, str(row[columns.index(label)])) for label in metric.labels)): float(
                    row[columns.index(metric.values[0])]
                )
                for row in cursor.fetchall()
            }
            assert samples[metric.name] == expected, metric.key


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
