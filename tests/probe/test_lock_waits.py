"""A table another session locked costs the metric that reads it the lock-wait bound, not the probe: the other
metrics arrive, and the probe answers well inside its timeout."""

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

TIMEOUT = 10.0
SETS = {
    "s": {
        "locked_items": metric("select count(*) as n from items", "n"),
        "answers": metric("select 42 as n", "n"),
    }
}


def _probe_behind_lock(client: Any) -> tuple[dict[str, Any], str, float]:
    started = time.monotonic()
    samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    elapsed = time.monotonic() - started
    return samples, client.get("/probe", params={"target": "db", "debug": "true"}).text, elapsed


def _assert_only_the_locked_metric_failed(samples: dict[str, Any], elapsed: float, bound: float) -> None:
    assert value(samples, "sqlprobe_query_success", metric="locked_items") == 0.0
    assert value(samples, "sqlprobe_query_success", metric="answers") == 1.0
    assert value(samples, "query_exporter_answers") == 42.0
    # The lock wait's bound, give or take a second; far from the probe's timeout.
    assert bound - 0.5 <= elapsed < bound + 1.5 < TIMEOUT


def test_a_write_locked_mariadb_table_fails_its_metric_alone_after_the_lock_wait_bound(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sets = {
        "s": {key: {**spec, "query": spec["query"].replace("items", "probe.items")} for key, spec in SETS["s"].items()}
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "s", timeout=f"{TIMEOUT:g}s")}, sets)
    locker = server.root_connection()
    try:
        with client_for(config) as client:
            client.get("/probe", params={"target": "db"})  # a connection in the pool, as in production
            with locker.cursor() as cursor:
                cursor.execute("lock tables probe.items write")
            samples, debug, elapsed = _probe_behind_lock(client)
    finally:
        locker.close()
    _assert_only_the_locked_metric_failed(samples, elapsed, 2.0)
    assert "Lock wait timeout exceeded" in debug


def test_a_mariadb_targets_lock_wait_timeout_sets_the_bound(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sets = {
        "s": {key: {**spec, "query": spec["query"].replace("items", "probe.items")} for key, spec in SETS["s"].items()}
    }
    entry = target(server.dsn, "s", timeout=f"{TIMEOUT:g}s") | {"lock_wait_timeout": "3s"}
    config = write_config(tmp_path, {"db": entry}, sets)
    locker = server.root_connection()
    try:
        with locker.cursor() as cursor:
            cursor.execute("lock tables probe.items write")
        with client_for(config) as client:
            samples, debug, elapsed = _probe_behind_lock(client)
    finally:
        locker.close()
    _assert_only_the_locked_metric_failed(samples, elapsed, 3.0)
    assert "Lock wait timeout exceeded" in debug


def test_an_exclusively_locked_postgresql_table_fails_its_metric_alone_after_the_lock_wait_bound(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    config = write_config(tmp_path, {"db": target(postgres.dsn, "s", timeout=f"{TIMEOUT:g}s")}, SETS)
    locker = postgres.superuser_connection()
    try:
        with client_for(config) as client:
            client.get("/probe", params={"target": "db"})
            with locker.transaction():
                locker.execute("lock table items in access exclusive mode")
                samples, debug, elapsed = _probe_behind_lock(client)
    finally:
        locker.close()
    _assert_only_the_locked_metric_failed(samples, elapsed, 2.0)
    assert "canceling statement due to lock timeout" in debug
