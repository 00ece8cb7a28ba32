"""promtool accepts what sqlprobe serves: on success, on failure, for the shipped query sets and on /metrics."""

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from app.config import load_config
from tests.helpers import ITEMS_SET, client_for, target, write_config
from tests.servers import MariaDB

SHIPPED = Path(__file__).parent.parent


def promtool_check(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``text``."""
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


def test_promtool_accepts_probes_and_own_metrics(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, promtool: str
) -> None:
    odd = {
        "odd_labels": {
            "query": "select 'say \"hi\"\\n' as name, 1 as n union all select null, 2",
            "type": "counter",
            "description": "labels that need escaping",
            "labels": ["name"],
            "value": "n",
        }
    }
    targets = {
        "good": target(fleet[0].dsn, "items", "odd"),
        "dead": target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items"),
    }
    config = write_config(tmp_path, targets, {"items": ITEMS_SET, "odd": odd})
    with client_for(config) as client:
        pages = {name: client.get("/probe", params={"target": name}).text for name in targets}
        pages["/metrics"] = client.get("/metrics").text
    assert "query_exporter_odd_labels_total" in pages["good"]
    for name, text in pages.items():
        result = promtool_check(promtool, text)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name


def test_promtool_accepts_probes_of_every_shipped_query_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleet: Sequence[MariaDB], promtool: str
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo target's SQLite file is created in the working directory
    queries = load_config(SHIPPED / "targets.yml", SHIPPED / "queries.yml", environ={"MYSQL_EXPORTER_PASSWORD": ""})
    mysql_sets = [name for name in queries.query_sets if not name.startswith(("sqlite_", "postgresql_"))]
    (tmp_path / "targets.yml").write_text(
        yaml.safe_dump(
            {
                "targets": {
                    "demo": target("sqlite:///demo.sqlite", "sqlite_demo"),
                    "db": target(fleet[0].dsn, *mysql_sets),
                }
            }
        )
    )
    config = load_config(tmp_path / "targets.yml", SHIPPED / "queries.yml", environ={})
    with client_for(config) as client:
        pages = {name: client.get("/probe", params={"target": name}).text for name in config.targets}
    assert "query_exporter_mysql_schema_data_bytes" in pages["db"]
    for name, text in pages.items():
        result = promtool_check(promtool, text)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name
