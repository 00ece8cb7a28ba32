"""The MySQL/MariaDB query sets shipped in queries.yml give, on a real MariaDB, what their SQL gives run directly."""

import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from app.config import Config, Metric, load_config
from tests.helpers import Samples, client_for, parse_samples, target, value, write_config
from tests.paths import ROOT_DIR
from tests.servers import MariaDB, replication_pair

QUERIES = ROOT_DIR / "queries.yml"
LIBRARY = ("processlist", "mysql_overview", "innodb", "table_sizes", "long_running", "replication")
SYSTEM_SCHEMAS = {"mysql", "information_schema", "performance_schema", "sys"}
# The statement docs/query-library.md documents, for a user named LIBRARY_USER.
LIBRARY_USER = "library"
DOCUMENTED_GRANT = f"GRANT PROCESS, SELECT, SLAVE MONITOR ON *.* TO '{LIBRARY_USER}'@'127.0.0.1'"
LONG_RUNNING_THRESHOLD = "time >= 60"

Labels = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def replication(mariadb_paths: tuple[str, str]) -> Iterator[tuple[MariaDB, MariaDB]]:
    """A throwaway primary and a replica of it, replication running."""
    with replication_pair(mariadb_paths) as pair:
        yield pair


def library_dsn(server: MariaDB) -> str:
    """The DSN of a user that has exactly the documented grants on ``server`` (created on first use)."""
    server.execute(
        f"create user if not exists '{LIBRARY_USER}'@'127.0.0.1' identified by '{server.password}'", DOCUMENTED_GRANT
    )
    return f"mysql+pymysql://{LIBRARY_USER}:{server.password}@127.0.0.1:{server.port}/"


def shipped(tmp_path: Path, dsn: str, *query_sets: str) -> Config:
    """The shipped queries.yml with one target ``db`` at ``dsn`` that runs ``query_sets``."""
    targets = tmp_path / "targets.yml"
    targets.write_text(yaml.safe_dump({"targets": {"db": target(dsn, *query_sets)}}))
    return load_config(targets, QUERIES, environ={})


def probe(config: Config) -> Samples:
    """The samples of one probe of target ``db``."""
    with client_for(config) as client:
        return parse_samples(client.get("/probe", params={"target": "db"}).text)


def metrics_of(config: Config, query_set: str) -> dict[str, Metric]:
    """The metrics of ``query_set`` by key."""
    return {metric.key: metric for metric in config.query_sets[query_set]}


def probed(samples: Samples, metric: Metric) -> dict[Labels, float]:
    """The samples of ``metric`` in a probe (a counter's are named ``…_total``)."""
    return samples.get(f"{metric.name}_total" if metric.kind == "counter" else metric.name, {})


def direct(connection: Any, metric: Metric) -> dict[Labels, float]:
    """The samples ``metric`` should give: its SQL run on ``connection`` (then closed), NULL values skipped."""
    with connection, connection.cursor() as cursor:
        cursor.execute(metric.sql)
        columns = [column[0].lower() for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return {
        tuple(sorted((label, "" if row[label] is None else str(row[label])) for label in metric.labels)): float(
            row[metric.values[0]]
        )
        for row in rows
        if row[metric.values[0]] is not None
    }


def succeeded(config: Config, samples: Samples) -> dict[str, float]:
    """sqlprobe_query_success of every metric of target ``db``, by metric key."""
    return {
        metric.key: value(samples, "sqlprobe_query_success", metric=metric.key)
        for metric in config.targets["db"].metrics
    }


def all_succeeded(config: Config, samples: Samples) -> bool:
    """Whether the probe and every one of its metrics succeeded."""
    return value(samples, "probe_success") == 1.0 and set(succeeded(config, samples).values()) == {1.0}


def assert_between(
    before: Mapping[Labels, float], probe: Mapping[Labels, float], after: Mapping[Labels, float]
) -> None:
    """Every counter of ``probe`` lies between its direct reads ``before`` and ``after`` the probe."""
    assert set(before) == set(probe) == set(after)
    for labels, probed_value in probe.items():
        assert before[labels] <= probed_value <= after[labels], labels


def test_innodb_and_server_counters_lie_between_direct_reads_around_the_probe(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    config = shipped(tmp_path, server.dsn, "innodb", "mysql_overview")
    counters = [metric for metric in config.targets["db"].metrics if metric.kind == "counter"]
    before = {metric.key: direct(server.exporter_connection(), metric) for metric in counters}
    samples = probe(config)
    after = {metric.key: direct(server.exporter_connection(), metric) for metric in counters}
    assert all_succeeded(config, samples)
    for metric in counters:
        assert_between(before[metric.key], probed(samples, metric), after[metric.key])
    innodb = metrics_of(config, "innodb")
    # Every operation is there; Innodb_rows_* only where the server still has them (MariaDB 10.11 does not).
    assert {dict(labels)["variable_name"] for labels in probed(samples, innodb["mysql_handler_row_operations"])} == {
        "Handler_write",
        "Handler_update",
        "Handler_delete",
        "Handler_read_first",
        "Handler_read_key",
        "Handler_read_last",
        "Handler_read_next",
        "Handler_read_prev",
        "Handler_read_rnd",
        "Handler_read_rnd_next",
    }
    assert probed(samples, innodb["mysql_innodb_buffer_pool_read_requests"])
    assert probed(samples, innodb["mysql_innodb_buffer_pool_reads"])


def test_innodb_buffer_pool_pages_are_those_of_the_server(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    config = shipped(tmp_path, server.dsn, "innodb")
    innodb = metrics_of(config, "innodb")
    samples = probe(config)
    assert all_succeeded(config, samples)
    pages = {
        dict(labels)["variable_name"]: count
        for labels, count in probed(samples, innodb["mysql_innodb_buffer_pool_pages"]).items()
    }
    expected = {
        dict(labels)["variable_name"]: count
        for labels, count in direct(server.exporter_connection(), innodb["mysql_innodb_buffer_pool_pages"]).items()
    }
    assert (
        set(pages)
        == set(expected)
        == {f"Innodb_buffer_pool_pages_{state}" for state in ("data", "free", "dirty", "total")}
    )
    # The pool's size is fixed; how its pages divide moves with the server's work, within the total.
    total = pages["Innodb_buffer_pool_pages_total"]
    assert total == expected["Innodb_buffer_pool_pages_total"]
    assert pages["Innodb_buffer_pool_pages_data"] + pages["Innodb_buffer_pool_pages_free"] <= total
    assert 0 <= pages["Innodb_buffer_pool_pages_dirty"] <= pages["Innodb_buffer_pool_pages_data"]
    page_size = innodb["mysql_innodb_page_size_bytes"]
    assert probed(samples, page_size) == direct(server.exporter_connection(), page_size)
    (pool_bytes,) = server.query("select @@innodb_buffer_pool_size")[0]
    assert total * probed(samples, page_size)[()] <= float(pool_bytes)


def test_table_sizes_report_every_user_schema_as_information_schema_does(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    schema = "sizes_" + secrets.token_hex(4)
    server.execute(
        f"create database {schema}",
        f"create table {schema}.notes (id int primary key, note varchar(200), key (note))",
        f"insert into {schema}.notes select seq, repeat('x', seq) from {schema}.seq_1_to_150",
        f"analyze table {schema}.notes",
    )
    try:
        config = shipped(tmp_path, server.dsn, "table_sizes")
        tables = metrics_of(config, "table_sizes")
        samples = probe(config)
        assert all_succeeded(config, samples)
        for metric in config.targets["db"].metrics:
            expected = direct(server.exporter_connection(), metric)
            assert probed(samples, metric) == expected, metric.key
            assert (("schema", schema),) in expected, metric.key
            assert (("schema", "probe"),) in expected, metric.key
        schemas = {dict(labels)["schema"] for labels in probed(samples, tables["mysql_schema_tables"])}
        existing = {name for (name,) in server.root_query("select schema_name from information_schema.schemata")}
        assert SYSTEM_SCHEMAS & existing, "the server should have system schemas to leave out"
        assert schemas == existing - SYSTEM_SCHEMAS
        ((rows,),) = server.root_query(f"select count(*) from {schema}.notes")
        assert probed(samples, tables["mysql_schema_tables"])[(("schema", schema),)] == 1.0
        assert probed(samples, tables["mysql_schema_estimated_rows"])[(("schema", schema),)] == float(rows)
        assert probed(samples, tables["mysql_schema_index_bytes"])[(("schema", schema),)] > 0
    finally:
        server.execute(f"drop database {schema}")


def test_long_running_counts_statements_over_the_threshold_and_the_age_of_the_oldest(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    config = shipped(tmp_path, server.dsn, "long_running")
    long_running = metrics_of(config, "long_running")
    # The same set with a threshold of 1 s instead of 60 s, so that a test need not wait a minute.
    spec = yaml.safe_load(QUERIES.read_text())["query_sets"]["long_running"]
    assert all(block["query"].count(LONG_RUNNING_THRESHOLD) == 1 for block in spec.values())
    (tmp_path / "quick").mkdir()
    quick = write_config(
        tmp_path / "quick",
        {"db": target(server.dsn, "long_running")},
        {
            "long_running": {
                key: {**block, "query": block["query"].replace(LONG_RUNNING_THRESHOLD, "time >= 1")}
                for key, block in spec.items()
            }
        },
    )

    idle = probe(config)
    assert all_succeeded(config, idle)
    assert value(idle, "query_exporter_mysql_long_running_queries") == 0.0
    assert value(idle, "query_exporter_mysql_oldest_query_seconds") == 0.0, "no statement runs: 0, not missing"

    sleeper = server.root_connection()
    sleeper_id = sleeper.thread_id()
    interrupted: list[BaseException] = []

    def sleep() -> None:
        try:
            with sleeper.cursor() as cursor:
                cursor.execute("select sleep(30)")
        except pymysql.err.OperationalError as error:  # KILL QUERY interrupts it
            interrupted.append(error)
        finally:
            sleeper.close()

    started = time.monotonic()
    thread = threading.Thread(target=sleep)
    thread.start()
    try:
        while not server.root_query(
            f"select 1 from information_schema.processlist where id = {sleeper_id} and command = 'Query'"
        ):
            time.sleep(0.02)
        seen = time.monotonic()
        time.sleep(max(0.0, 2.2 - (seen - started)))
        probe_started = time.monotonic()
        samples = probe(config)
        probe_ended = time.monotonic()
        lowered = probe(quick)
        lowered_ended = time.monotonic()
    finally:
        server.execute(f"kill query {sleeper_id}")
        thread.join(10)
    assert interrupted
    assert all_succeeded(config, samples)
    assert all_succeeded(quick, lowered)
    # Running for about 2 s: under the shipped 60 s threshold, over the lowered one.
    assert value(samples, "query_exporter_mysql_long_running_queries") == 0.0
    assert value(lowered, "query_exporter_mysql_long_running_queries") == 1.0
    # The processlist counts whole seconds, so an age may be off by up to one from the elapsed time.
    oldest = value(samples, "query_exporter_mysql_oldest_query_seconds")
    assert probe_started - seen - 1 < oldest < probe_ended - started + 1
    assert 1 <= value(lowered, "query_exporter_mysql_oldest_query_seconds") < lowered_ended - started + 1
    # Once the sleeper's session is gone nothing runs, the probe's own statement aside.
    deadline = time.monotonic() + 10
    while server.root_query(f"select 1 from information_schema.processlist where id = {sleeper_id}"):
        assert time.monotonic() < deadline, "the sleeper's session should end"
        time.sleep(0.02)
    assert direct(server.exporter_connection(), long_running["mysql_oldest_query_seconds"]) == {(): 0.0}


def test_replication_reports_lag_and_running_threads_as_show_slave_status_does(
    tmp_path: Path, replication: tuple[MariaDB, MariaDB]
) -> None:
    primary, replica = replication
    primary.execute(
        "create database replicated",
        "create table replicated.t (id int primary key)",
        "insert into replicated.t values (1)",
    )
    config = shipped(tmp_path, library_dsn(replica), "replication")
    deadline = time.monotonic() + 10
    while not replica.root_query("select 1 from information_schema.tables where table_schema = 'replicated'") or not (
        replica.root_query("select id from replicated.t")
    ):
        assert time.monotonic() < deadline, "the replica should apply what the primary does"
        time.sleep(0.05)

    def check(before: Mapping[str, Any], samples: Samples, after: Mapping[str, Any]) -> None:
        assert all_succeeded(config, samples)
        for thread in ("IO", "SQL"):
            assert before[f"Slave_{thread}_Running"] == after[f"Slave_{thread}_Running"]
            running = float(before[f"Slave_{thread}_Running"] == "Yes")
            assert value(samples, f"query_exporter_mysql_replica_{thread.lower()}_running") == running
            assert value(
                samples, f"query_exporter_mysql_replica_last_{thread.lower()}_errno", connection_name=""
            ) == float(before[f"Last_{thread}_Errno"])
        lags = (before["Seconds_Behind_Master"], after["Seconds_Behind_Master"])
        if None in lags:  # a stopped thread: no lag sample
            assert lags == (None, None)
            assert not samples.get("query_exporter_mysql_replica_lag_seconds")
        else:
            assert (
                min(lags) <= value(samples, "query_exporter_mysql_replica_lag_seconds", connection_name="") <= max(lags)
            )

    before = replica.replica_status()
    samples = probe(config)
    check(before, samples, replica.replica_status())
    assert value(samples, "query_exporter_mysql_replica_sql_running") == 1.0

    replica.execute("stop slave sql_thread")
    try:
        before = replica.replica_status()
        stopped = probe(config)
        check(before, stopped, replica.replica_status())
        assert value(stopped, "query_exporter_mysql_replica_sql_running") == 0.0
        assert value(stopped, "query_exporter_mysql_replica_io_running") == 1.0
    finally:
        replica.execute("start slave sql_thread")
        replica.wait_until_replicating()


def test_replication_set_succeeds_with_no_samples_on_a_server_that_is_no_replica(
    tmp_path: Path, replication: tuple[MariaDB, MariaDB]
) -> None:
    primary, _ = replication  # a primary with a replica connected, but no replica itself
    assert primary.replica_status() == {}
    config = shipped(tmp_path, library_dsn(primary), "replication")
    samples = probe(config)
    assert all_succeeded(config, samples)
    assert not any(probed(samples, metric) for metric in config.targets["db"].metrics)


def test_the_documented_grants_suffice_for_every_query_set(
    tmp_path: Path, replication: tuple[MariaDB, MariaDB]
) -> None:
    _, replica = replication
    config = shipped(tmp_path, library_dsn(replica), *LIBRARY)
    samples = probe(config)
    assert succeeded(config, samples) == {metric.key: 1.0 for metric in config.targets["db"].metrics}
    assert value(samples, "probe_success") == 1.0
    # What needs the grants is seen: replication threads (PROCESS), replication status (SLAVE MONITOR), schemas (SELECT).
    assert value(samples, "query_exporter_mysql_replica_io_running") == 1.0
    assert value(samples, "query_exporter_mysql_replica_lag_seconds", connection_name="") >= 0
    assert (("schema", "probe"),) in samples["query_exporter_mysql_schema_data_bytes"]


def test_replication_status_needs_slave_monitor_not_replication_client_on_mariadb(
    tmp_path: Path, replication: tuple[MariaDB, MariaDB]
) -> None:
    _, replica = replication
    # MySQL's grant for SHOW REPLICA STATUS; on MariaDB 10.5+ REPLICATION CLIENT is BINLOG MONITOR and does not do.
    replica.execute(
        f"create user 'mysql_style'@'127.0.0.1' identified by '{replica.password}'",
        "grant process, select, replication client on *.* to 'mysql_style'@'127.0.0.1'",
    )
    dsn = f"mysql+pymysql://mysql_style:{replica.password}@127.0.0.1:{replica.port}/"
    config = shipped(tmp_path, dsn, "replication")
    assert succeeded(config, probe(config)) == {
        "mysql_replica_lag_seconds": 0.0,
        "mysql_replica_last_io_errno": 0.0,
        "mysql_replica_last_sql_errno": 0.0,
        "mysql_replica_io_running": 1.0,
        "mysql_replica_sql_running": 1.0,
    }
