"""sqlprobe-convert query-exporter: checked against query-exporter itself, run on the same MariaDB servers."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import BUILTIN_FAMILIES, load_config
from tests.helpers import Samples, client_for, missing, parse_samples
from tests.peers import QUERY_EXPORTER, QUERY_EXPORTER_BUILTINS, query_exporter, scrape, user_samples
from tests.servers import EXPORTER_USER, MariaDB

CONVERT = Path(sys.executable).parent / "sqlprobe-convert"

# Every construct a query-exporter user writes that sqlprobe can export the same way: a DSN from the
# environment, a DSN as a mapping with the password from the environment, database labels, one query feeding
# several metrics, a counter, both forms of parameters, a query on one database only, a % in the SQL.
CONFIG = """\
databases:
  db0:
    dsn: !env QE_DSN_0
    labels: {{region: eu, tier: gold}}
  db1:
    dsn:
      dialect: mysql+pymysql
      user: {user}
      password: !env QE_PASSWORD_1
      host: 127.0.0.1
      port: {port1}
      database: probe
    labels: {{region: us, tier: silver}}
metrics:
  items_qty:
    type: gauge
    description: items in stock by kind
    labels: [kind]
  items_worth:
    type: gauge
    description: value of the stock by kind
    labels: [kind]
  items_rows:
    type: counter
    description: rows in the items table
  kind_rows:
    type: gauge
    description: rows per kind
    labels: [kind]
  pair_rows:
    type: gauge
    description: rows per kind and color
    labels: [kind, color]
  colored_rows:
    type: gauge
    description: rows whose color has an e
queries:
  by_kind:
    databases: [db0, db1]
    metrics: [items_qty, items_worth]
    sql: select kind, sum(qty) as items_qty, sum(qty * price) as items_worth from items group by kind
  rows:
    databases: [db0, db1]
    metrics: [items_rows]
    sql: select count(*) as items_rows from items
  per_kind:
    databases: [db0, db1]
    metrics: [kind_rows]
    parameters:
      - kind: bolt
      - kind: nut
    sql: select :kind as kind, count(*) as kind_rows from items where kind = :kind
  pairs:
    databases: [db0]
    metrics: [pair_rows]
    parameters:
      k: [{{name: bolt}}, {{name: washer}}]
      c: [{{name: red}}, {{name: grey}}]
    sql: >-
      select :k__name as kind, :c__name as color, count(*) as pair_rows from items
      where kind = :k__name and color = :c__name
  colored:
    databases: [db1]
    metrics: [colored_rows]
    sql: select count(*) as colored_rows from items where color like '%e%'
"""


@pytest.fixture(scope="session")
def query_exporter_installed() -> None:
    """query-exporter in .venv-peers; without it these tests fail under CI and skip elsewhere."""
    if not QUERY_EXPORTER.exists():
        missing(f"query-exporter is not installed in {QUERY_EXPORTER.parent.parent}: make peers")


def convert(exporter: str, config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run the sqlprobe-convert command as a user would."""
    return subprocess.run(
        [str(CONVERT), exporter, str(config), "--out", str(out)], capture_output=True, text=True, check=False
    )


def probed_series(client: TestClient) -> Samples:
    """Every target's user samples, each with its target's labels from /sd as Prometheus would attach them."""
    series: Samples = {}
    for group in client.get("/sd").json():
        (name,) = group["targets"]
        target_labels = {key: value for key, value in group["labels"].items() if not key.startswith("__")}
        for sample_name, samples in parse_samples(client.get("/probe", params={"target": name}).text).items():
            if sample_name.removesuffix("_total") in BUILTIN_FAMILIES:
                continue
            for labels, value in samples.items():
                series.setdefault(sample_name, {})[tuple(sorted({**dict(labels), **target_labels}.items()))] = value
    return series


def test_converted_config_gives_the_series_query_exporter_gives(
    tmp_path: Path, fleet: Sequence[MariaDB], query_exporter_installed: None
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(user=EXPORTER_USER, port1=fleet[1].port))
    environ = {"QE_DSN_0": fleet[0].dsn, "QE_PASSWORD_1": fleet[1].password}
    with query_exporter(config, {"PATH": os.environ["PATH"], **environ}, tmp_path / "query-exporter.log") as url:
        theirs = user_samples(scrape(url), QUERY_EXPORTER_BUILTINS)
    assert set(theirs) == {"items_qty", "items_worth", "items_rows_total", "kind_rows", "pair_rows", "colored_rows"}, (
        tmp_path / "query-exporter.log"
    ).read_text()

    converted = convert("query-exporter", config, tmp_path / "sqlprobe")
    assert converted.returncode == 0, converted.stderr
    sqlprobe_config = load_config(tmp_path / "sqlprobe" / "targets.yml", tmp_path / "sqlprobe" / "queries.yml", environ)
    with client_for(sqlprobe_config) as client:
        ours = probed_series(client)
    assert ours == theirs
    # And both are what the SQL gives when run directly.
    for server, database in zip(fleet, ("db0", "db1"), strict=True):
        ((rows,),) = server.query("select count(*) from items")
        assert theirs["items_rows_total"][(("database", database), *_region_tier(database))] == float(rows)


def _region_tier(database: str) -> tuple[tuple[str, str], ...]:
    return (("region", "eu"), ("tier", "gold")) if database == "db0" else (("region", "us"), ("tier", "silver"))
