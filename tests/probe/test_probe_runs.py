"""A probe's run: each probe its own deadline, kept results only while the server answers, a statement at most once."""

import secrets
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, wait_until, write_config
from tests.servers import MariaDB

SCRAPE_TIMEOUT = "X-Prometheus-Scrape-Timeout-Seconds"
# Longer than a 1.5 s scrape's budget (1 s), well within a 6 s one's (5.5 s).
SLOW_SQL = "select sleep(2.5) as slept"
SLOW_SET = {"slow": {"slept": metric(SLOW_SQL, "slept")}}


def _sleeping(server: MariaDB) -> bool:
    return any(info == SLOW_SQL for _, _, info in server.exporter_sessions())


def test_a_probe_that_joins_a_run_gets_its_answer_after_an_earlier_probe_gave_up(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "slow")}, SLOW_SET)
    with client_for(config) as client, ThreadPoolExecutor(2) as pool:
        # Prometheus A (1.5 s scrape timeout) starts the run; Prometheus B (6 s) joins it while the SQL runs.
        short = pool.submit(client.get, "/probe", params={"target": "db"}, headers={SCRAPE_TIMEOUT: "1.5"})
        assert wait_until(lambda: _sleeping(server), 5)
        long = pool.submit(client.get, "/probe", params={"target": "db"}, headers={SCRAPE_TIMEOUT: "6"})
        short_samples = parse_samples(short.result().text)
        # A gave up; the run, and its statement on the server, go on for B.
        assert _sleeping(server)
        long_samples = parse_samples(long.result().text)
    assert value(short_samples, "probe_success") == 0.0
    assert value(long_samples, "probe_success") == 1.0
    ((slept,),) = server.query("select sleep(0) as slept")
    assert value(long_samples, "query_exporter_slept") == float(slept)


def test_a_debug_probe_that_joins_a_scrape_gets_the_whole_answer(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    config = write_config(tmp_path, {"db": target(server.dsn, "slow")}, SLOW_SET)
    with client_for(config) as client, ThreadPoolExecutor(2) as pool:
        scrape = pool.submit(client.get, "/probe", params={"target": "db"}, headers={SCRAPE_TIMEOUT: "1.5"})
        assert wait_until(lambda: _sleeping(server), 5)
        # A person's debug probe: no scrape timeout, so the target's (10 s).
        debug = pool.submit(client.get, "/probe", params={"target": "db", "debug": "true"})
        assert value(parse_samples(scrape.result().text), "probe_success") == 0.0
        page = debug.result().text
    assert "probe_success: 1" in page
    assert "error (" not in page


@pytest.fixture
def kept_user(fleet: Sequence[MariaDB]) -> Iterator[tuple[MariaDB, str]]:
    """A user of its own (so that locking it disturbs no other test), and its DSN."""
    server = fleet[0]
    password = "kept-" + secrets.token_hex(8)
    server.execute(
        f"create user 'kept'@'127.0.0.1' identified by '{password}'", "grant select on probe.* to 'kept'@'127.0.0.1'"
    )
    yield server, f"mysql+pymysql://kept:{password}@127.0.0.1:{server.port}/probe"
    server.execute("drop user 'kept'@'127.0.0.1'")


def test_results_kept_for_min_interval_are_served_only_while_the_server_answers(
    tmp_path: Path, kept_user: tuple[MariaDB, str]
) -> None:
    server, dsn = kept_user
    sql = "select count(*) as n from items"
    sets = {"kept": {"items": {**metric(sql, "n"), "min_interval": "1m"}}}
    config = write_config(tmp_path, {"db": target(dsn, "kept")}, sets)
    with client_for(config) as client:
        first = parse_samples(client.get("/probe", params={"target": "db"}).text)
        time.sleep(0.3)
        second = probe_views(client, "db")
        # The exporter's account locked and its sessions killed, while the kept result is still young.
        server.execute("alter user 'kept'@'127.0.0.1' account lock")
        for (session,) in server.root_query("select id from information_schema.processlist where user = 'kept'"):
            server.execute(f"kill {int(session)}")
        refused = probe_views(client, "db")
    ((count,),) = server.query(sql)
    assert value(first, "query_exporter_items") == value(second.samples, "query_exporter_items") == float(count)
    assert value(second.samples, "probe_success") == 1.0
    assert "not run: the result of" in second.debug
    assert value(refused.samples, "probe_success") == 0.0
    assert value(refused.samples, "sqlprobe_query_success", metric="items") == 0.0
    assert "query_exporter_items" not in refused.samples
    assert "connection failed (connect): " in refused.debug
    assert "this account is locked" in refused.debug
    # The kept result carries its age.
    first_age = value(first, "sqlprobe_query_result_age_seconds", metric="items")
    second_age = value(second.samples, "sqlprobe_query_result_age_seconds", metric="items")
    assert second_age >= first_age + 0.3


def test_a_statement_runs_at_most_once_per_probe_when_its_new_connection_is_killed(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    marker = "once_" + secrets.token_hex(6)
    sql = f"select sleep(1) as slept, '{marker}' as marker"
    config = write_config(tmp_path, {"db": target(server.dsn, "once")}, {"once": {"slept": metric(sql, "slept")}})

    def running() -> list[int]:
        sessions = server.exporter_sessions()
        return [session for session, _, info in sessions if info == sql]

    # Every statement the server receives, in a table: the count is the server's own.
    server.execute("set global log_output = 'TABLE'", "truncate table mysql.general_log", "set global general_log = 1")
    try:
        with client_for(config) as client, ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.get, "/probe", params={"target": "db", "debug": "true"})
            # A session killed while its first statement runs (pt-kill, a crash): the statement may have done its
            # work already, so it must not run again.
            assert wait_until(running, 5)
            server.execute(f"kill connection {running()[0]}")
            page = answer.result().text
    finally:
        server.execute("set global general_log = 0")
    ((executions,),) = server.root_query(
        # Each text sent that holds the statement (sqlprobe's own COMMIT or next BEGIN may follow it in the text).
        f"select count(*) from mysql.general_log where command_type = 'Query' and argument like '%{marker}%'"
    )
    server.execute("truncate table mysql.general_log")
    assert executions == 1
    assert "probe_success: 0" in page
    assert "Lost connection" in page


def test_a_probe_waiting_for_a_busy_pool_frees_its_thread_at_its_deadline(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    # Four selections of one target, each its own run, hold the target's 4 connections (2 pooled, 2 overflow).
    busy = {name: {f"slept_{name}": metric(f"select sleep(3) as slept, '{name}' as busy", "slept")} for name in "abcd"}
    sets = {**busy, "quick": {"one": metric("select 1 as one", "one")}}
    targets = {"busy": target(server.dsn, *sets), "other": target(server.dsn, "quick")}
    config = write_config(tmp_path, targets, sets)
    short = {SCRAPE_TIMEOUT: "1.5"}
    # Five threads in all: the four busy runs, and one more.
    with client_for(config, max_workers=5) as client, ThreadPoolExecutor(4) as pool:
        holders = [pool.submit(client.get, "/probe", params={"target": "busy", "query_set": name}) for name in busy]
        assert wait_until(
            lambda: sum(info is not None and "busy" in info for *_, info in server.exporter_sessions()) == 4, 5
        )
        # The fifth run of the target waits for one of its connections, with the fifth thread, until its deadline.
        waiting = client.get("/probe", params={"target": "busy", "query_set": "quick"}, headers=short)
        # Then that thread is free for a probe of another target.
        other = parse_samples(client.get("/probe", params={"target": "other"}, headers=short).text)
        for holder in holders:
            holder.result()
    assert value(parse_samples(waiting.text), "probe_success") == 0.0
    assert value(other, "probe_success") == 1.0
