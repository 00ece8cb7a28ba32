"""SQLite targets on their small pool of threads: a statement that waits holds one thread, not a share of the probes."""

import logging
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import client_for, metric, parse_samples, target, value, write_config

SCRAPE_TIMEOUT = "X-Prometheus-Scrape-Timeout-Seconds"
THREADS = 2


@pytest.fixture
def locked_database(tmp_path: Path) -> Iterator[Path]:
    """A SQLite file that another process holds an exclusive lock on: readers wait for it (SQLite's busy timeout)."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("create table t (n integer)")
    holder.execute("begin exclusive")
    yield path
    holder.execute("rollback")
    holder.close()


def test_a_quick_sqlite_probe_does_not_queue_behind_a_locked_database_while_a_thread_is_free(
    tmp_path: Path, locked_database: Path
) -> None:
    sets = {"count": {"rows": metric("select count(*) as n from t", "n")}, "one": {"one": metric("select 1 as n", "n")}}
    targets = {"locked": target(f"sqlite:///{locked_database}", "count"), "quick": target("sqlite://", "one")}
    config = write_config(tmp_path, targets, sets)
    with client_for(config, max_workers=THREADS) as client, ThreadPoolExecutor(1) as pool:
        # The probe of the locked file holds one thread while SQLite waits for the lock (5 s by default).
        waiting = pool.submit(client.get, "/probe", params={"target": "locked"})
        time.sleep(0.5)  # its thread waits for the lock by now
        # The other thread is free: probe after probe of the in-memory target answers at once.
        quick = [
            parse_samples(client.get("/probe", params={"target": "quick"}, headers={SCRAPE_TIMEOUT: "1"}).text)
            for _ in range(THREADS * 2)
        ]
        waiting.result()
    assert [value(samples, "probe_success") for samples in quick] == [1.0] * (THREADS * 2)
    ((one,),) = sqlite3.connect(":memory:").execute("select 1 as n").fetchall()
    assert {value(samples, "query_exporter_one") for samples in quick} == {float(one)}


def test_stopping_after_probing_an_in_memory_sqlite_target_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(
        tmp_path, {"demo": target("sqlite://", "one")}, {"one": {"one": metric("select 1 as n", "n")}}
    )
    # Probes side by side: each thread gets an in-memory connection of its own.
    with client_for(config, max_workers=THREADS) as client, ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda _: client.get("/probe", params={"target": "demo"}), range(THREADS * 4)))
    # The lifespan is over: the engine and its connections were closed, as at SIGTERM.
    assert {value(parse_samples(answer.text), "probe_success") for answer in answers} == {1.0}
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []
