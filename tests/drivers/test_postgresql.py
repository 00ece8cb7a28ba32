"""PostgreSQL targets behave as MySQL ones: values of their SQL, failures as probe_success 0, deadlines kept."""

import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.config import Metric, load_config
from app.drivers.dialect import DEADLINE_GRACE
from tests.faults.test_fault_suite import connections_to
from tests.helpers import (
    ITEMS_SET,
    client_for,
    metric,
    parse_samples,
    probe_views,
    target,
    value,
    wait_until,
    write_config,
)
from tests.paths import ROOT_DIR
from tests.postgres import PostgreSQL

ROOT = ROOT_DIR
LabelPairs = tuple[tuple[str, str], ...]


def direct_samples(server: PostgreSQL, metric: Metric) -> dict[LabelPairs, float]:
    """The samples ``metric`` gets from its SQL run directly on ``server``, by sorted label pairs."""
    with server.exporter_connection() as connection:
        cursor = connection.execute(metric.sql)
        columns = [column.name for column in cursor.description or ()]
        return {
            tuple(sorted((label, str(row[columns.index(label)])) for label in metric.labels)): float(
                row[columns.index(metric.values[0])]
            )
            for row in cursor.fetchall()
        }


def test_postgresql_target_reports_the_values_its_sql_gives(tmp_path: Path, postgres: PostgreSQL) -> None:
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        samples = probe_views(client, "pg").samples
    assert value(samples, "probe_success") == 1.0
    assert set(samples["sqlprobe_query_success"].values()) == {1.0}
    quantities = postgres.query(ITEMS_SET["qty_by_kind"]["query"])
    assert len(samples["query_exporter_qty_by_kind"]) == len(quantities) > 1
    for kind, qty in quantities:
        assert value(samples, "query_exporter_qty_by_kind", kind=kind) == float(qty)
    prices = postgres.query(ITEMS_SET["price"]["query"])
    assert len(samples["query_exporter_price"]) == len(prices)
    for kind, color, price in prices:
        assert value(samples, "query_exporter_price", kind=kind, color=color) == float(price)
    ((count,),) = postgres.query(ITEMS_SET["items_created"]["query"])
    assert value(samples, "query_exporter_items_created_total") == float(count)


def test_refused_postgresql_connection_is_probe_success_0_with_a_clear_error_and_no_password(
    tmp_path: Path, closed_port: int
) -> None:
    password = "pw-" + secrets.token_hex(12)
    dsn = f"postgresql+psycopg://exporter:{password}@127.0.0.1:{closed_port}/probe"
    config = write_config(tmp_path, {"dead": target(dsn, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        response = client.get("/probe", params={"target": "dead"})
        views = probe_views(client, "dead")
        own = client.get("/metrics").text
    assert response.status_code == 200
    assert value(views.samples, "probe_success") == 0.0
    assert set(views.samples["sqlprobe_query_success"].values()) == {0.0}
    assert (
        f'connection failed (connect): connection failed: connection to server at "127.0.0.1", port {closed_port} failed: Connection refused'
        in views.debug
    )
    # Three probes: the first, then probe_views' plain one and its debug page.
    assert value(views.own, "sqlprobe_query_errors_total", target="dead", metric="price", reason="connect") == 3.0
    for text in (response.text, views.debug, own):
        assert password not in text


def test_wrong_postgresql_password_is_a_failed_probe_with_a_clear_error(tmp_path: Path, postgres: PostgreSQL) -> None:
    wrong = postgres.dsn.replace(postgres.password, "not-the-password-42")
    config = write_config(tmp_path, {"pg": target(wrong, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        views = probe_views(client, "pg")
    assert 'password authentication failed for user "exporter"' in views.debug
    assert "not-the-password-42" not in views.debug
    assert value(views.samples, "probe_success") == 0.0


def test_slow_postgresql_query_is_cancelled_on_the_server_at_the_deadline(tmp_path: Path, postgres: PostgreSQL) -> None:
    steps = {
        "before": metric("select 1 as one", "one"),
        "slow": metric("select pg_sleep(30) as slept", "slept"),
        "after": metric("select 2 as two", "two"),
    }
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "steps", timeout="2s")}, {"steps": steps}, namespace="")
    log = postgres.root / "server.log"
    logged_before = log.stat().st_size

    def sleeping() -> list[tuple[str | None, str]]:
        return [s for s in postgres.exporter_sessions() if s[0] == "active" and "pg_sleep(30)" in s[1]]

    with client_for(config) as client:
        started = time.monotonic()
        samples = parse_samples(client.get("/probe", params={"target": "pg"}).text)
        elapsed = time.monotonic() - started
        assert elapsed < 2.5
        assert value(samples, "before") == float(postgres.query(steps["before"]["query"])[0][0])
        assert value(samples, "sqlprobe_query_success", metric="slow") == 0.0
        assert value(samples, "sqlprobe_query_success", metric="after") == 0.0
        assert value(samples, "probe_success") == 0.0
        # Stopped on the server, by the cancel request sent at the deadline (not by statement_timeout a second
        # later), and its connection closed rather than pooled.
        assert wait_until(lambda: not sleeping(), 5), sleeping()
        assert "canceling statement due to user request" in log.read_bytes()[logged_before:].decode(errors="replace")
        assert wait_until(lambda: postgres.exporter_sessions() == [], 5), postgres.exporter_sessions()


def test_postgresql_server_ends_statements_and_cut_off_transactions_soon_after_any_deadline(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    names = ("statement_timeout", "idle_in_transaction_session_timeout")
    timeouts = {
        name: metric(f"select setting::int as ms from pg_settings where name = '{name}'", "ms") for name in names
    }
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "timeouts", timeout="3s")}, {"timeouts": timeouts})
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "pg"}).text)
    for name in names:
        # The target's timeout (no probe waits longer), plus the grace that lets the cancel request come first.
        assert value(samples, f"query_exporter_{name}") == 3000 + DEADLINE_GRACE * 1000
        assert postgres.query(f"show {name}") == [("0",)]


@pytest.fixture
def writing_functions(postgres: PostgreSQL) -> Iterator[None]:
    """Functions that delete from and insert into items: a SELECT that calls them reads by its kind."""
    with postgres.superuser_connection() as connection:
        connection.execute(
            "create function delete_items() returns int language plpgsql as $$ begin delete from items; return 1; end $$"
        )
        connection.execute(
            "create function insert_item() returns int language plpgsql"
            " as $$ begin insert into items (kind) values ('spring'); return 1; end $$"
        )
    yield
    with postgres.superuser_connection() as connection:
        connection.execute("drop function delete_items(), insert_item()")


@pytest.mark.usefixtures("writing_functions")
def test_postgresql_sessions_are_read_only(tmp_path: Path, postgres: PostgreSQL) -> None:
    writes = {
        "deleted": metric("select delete_items() as n", "n"),
        "inserted": metric("select insert_item() as n", "n"),
    }
    count = "select count(*) from items"
    rows = postgres.query(count)
    # The exporter user may write (see tests/postgres.py): only its sessions being read-only stop it.
    with postgres.exporter_connection() as connection:
        assert connection.execute("delete from items").rowcount == rows[0][0]
        connection.rollback()
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "writes")}, {"writes": writes})
    with client_for(config) as client:
        views = probe_views(client, "pg")
    assert value(views.samples, "sqlprobe_query_success", metric="deleted") == 0.0
    assert value(views.samples, "sqlprobe_query_success", metric="inserted") == 0.0
    assert "error (query): cannot execute DELETE in a read-only transaction" in views.debug
    assert "error (query): cannot execute INSERT in a read-only transaction" in views.debug
    assert postgres.query(count) == rows


def test_first_postgresql_probe_after_a_server_restart_succeeds(tmp_path: Path, postgres: PostgreSQL) -> None:
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "items")}, {"items": ITEMS_SET})
    with client_for(config) as client:
        assert value(parse_samples(client.get("/probe", params={"target": "pg"}).text), "probe_success") == 1.0
        assert postgres.exporter_sessions(), "the probe's connection should stay pooled"
        # No probe while the server is down: the pool still holds the connection the restart terminated.
        postgres.stop()
        postgres.start()
        up = parse_samples(client.get("/probe", params={"target": "pg"}).text)
    assert value(up, "probe_success") == 1.0
    for kind, qty in postgres.query(ITEMS_SET["qty_by_kind"]["query"]):
        assert value(up, "query_exporter_qty_by_kind", kind=kind) == float(qty)


def test_shipped_postgresql_overview_set_succeeds_with_the_values_of_its_sql(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    (tmp_path / "targets.yml").write_text(
        f'targets:\n  pg:\n    dsn: "{postgres.dsn}"\n    query_sets: [postgresql_overview]\n'
    )
    config = load_config(tmp_path / "targets.yml", ROOT / "queries.yml", environ={})
    metrics = {metric.key: metric for metric in config.query_sets["postgresql_overview"]}
    exact = {"postgresql_up", "postgresql_max_connections", "postgresql_database_size_bytes"}
    moving = {"postgresql_uptime_seconds", "postgresql_xact_commit", "postgresql_xact_rollback"}
    assert set(metrics) == exact | moving | {"postgresql_connections"}
    before = {key: direct_samples(postgres, metrics[key]) for key in moving}
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "pg"}).text)
        after = {key: direct_samples(postgres, metric) for key, metric in metrics.items()}
    assert value(samples, "probe_success") == 1.0
    assert {key: value(samples, "sqlprobe_query_success", metric=key) for key in metrics} == dict.fromkeys(metrics, 1.0)

    def probed(key: str) -> dict[LabelPairs, float]:
        return samples[f"{metrics[key].name}_total" if metrics[key].kind == "counter" else metrics[key].name]

    for key in exact:
        assert probed(key) == after[key], key
    for key in moving:
        ((labels, sample),) = probed(key).items()
        assert before[key][labels] <= sample <= after[key][labels], key
    # Measured after the probe, the direct session is the active one and the probe's own is idle in the pool.
    connections = dict(after["postgresql_connections"])
    connections[(("state", "idle"),)] -= 1
    assert probed("postgresql_connections") == {labels: n for labels, n in connections.items() if n}


@pytest.mark.usefixtures("writing_functions")
def test_postgresql_statements_cannot_lift_read_only_for_later_ones_or_change_later_sessions(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    count = "select count(*) from items"
    rows = postgres.query(count)
    path = "select length(current_setting('search_path')) as n"
    sets = {
        "turn": {
            # Returns a row, and makes the session's later transactions read-write (and its search path another).
            "lifted": metric("select length(set_config('default_transaction_read_only', 'off', false)) as n", "n"),
            "deleted": metric("select delete_items() as n", "n"),
            "path_set": metric("select length(set_config('search_path', 'pg_catalog', false)) as n", "n"),
        },
        "check": {"path": metric(path, "n")},
    }
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "turn", "check")}, sets)
    with client_for(config) as client:
        same_probe = probe_views(client, "pg")
        later = parse_samples(client.get("/probe", params={"target": "pg", "query_set": "check"}).text)
    assert postgres.query(count) == rows
    assert value(same_probe.samples, "sqlprobe_query_success", metric="deleted") == 0.0
    assert "cannot execute DELETE in a read-only transaction" in same_probe.debug
    ((expected,),) = postgres.query(path)
    assert value(later, "query_exporter_path") == float(expected)


def test_a_postgresql_probe_that_joins_a_run_gets_its_answer_after_an_earlier_probe_gave_up(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    sql = "select pg_sleep(2.5)::text = '' as slept"
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "slow")}, {"slow": {"slept": metric(sql, "slept")}})

    def sleeping() -> bool:
        return any(state == "active" and query == sql for state, query in postgres.exporter_sessions())

    scrape_timeout = "X-Prometheus-Scrape-Timeout-Seconds"
    with client_for(config) as client, ThreadPoolExecutor(2) as pool:
        short = pool.submit(client.get, "/probe", params={"target": "pg"}, headers={scrape_timeout: "1.5"})
        assert wait_until(sleeping, 5)
        long = pool.submit(client.get, "/probe", params={"target": "pg"}, headers={scrape_timeout: "6"})
        assert value(parse_samples(short.result().text), "probe_success") == 0.0
        long_samples = parse_samples(long.result().text)
    assert value(long_samples, "probe_success") == 1.0
    assert value(long_samples, "query_exporter_slept") == float(postgres.query(sql.replace("2.5", "0"))[0][0])


def test_a_postgresql_advisory_lock_taken_by_a_statement_is_not_held_after_the_probe(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    sets = {"lock": {"locked": metric("select pg_try_advisory_lock(4242)::int as n", "n")}}
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "lock")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "pg"}).text)
        assert value(samples, "query_exporter_locked") == 1.0
        # While sqlprobe's connection waits in the pool, nobody holds the lock.
        assert postgres.query("select count(*) from pg_locks where locktype = 'advisory' and objid = 4242") == [(0,)]


def test_a_postgresql_role_set_by_a_statement_does_not_reach_the_next_probe(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    # RESET ALL leaves role (and session_authorization) alone; the exporter user is a member of pg_monitor.
    who = "select (current_user = session_user)::int as n"
    sets = {
        "turn": {"turned": metric("select length(set_config('role', 'pg_monitor', false)) as n", "n")},
        "check": {"same_user": metric(who, "n")},
    }
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "turn", "check")}, sets)
    with client_for(config) as client:
        turned = parse_samples(client.get("/probe", params={"target": "pg", "query_set": "turn"}).text)
        later = parse_samples(client.get("/probe", params={"target": "pg", "query_set": "check"}).text)
    assert value(turned, "query_exporter_turned") == len("pg_monitor")
    ((expected,),) = postgres.query(who)
    assert value(later, "query_exporter_same_user") == float(expected)


def test_a_postgresql_statement_runs_at_most_once_per_probe_when_its_pooled_connection_is_killed(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    marker = "once_" + secrets.token_hex(6)
    sql = f"select pg_sleep(1)::text = '' as slept, '{marker}' as marker"
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "once")}, {"once": {"slept": metric(sql, "slept")}})
    sessions: set[int] = set()

    def running() -> list[int]:
        rows = postgres.superuser_query(f"select pid from pg_stat_activity where query = $${sql}$$")
        sessions.update(pid for (pid,) in rows)
        return [pid for (pid,) in rows]

    with client_for(config) as client, ThreadPoolExecutor(1) as pool:
        client.get("/probe", params={"target": "pg"})  # its connection goes back to the pool
        answer = pool.submit(client.get, "/probe", params={"target": "pg", "debug": "true"})
        # The pooled connection, killed while its statement runs (the statement may have done its work already).
        assert wait_until(running, 5)
        postgres.superuser_query(f"select pg_terminate_backend({running()[0]})")
        deadline = time.monotonic() + 2
        while not answer.done() and time.monotonic() < deadline:
            running()  # a second run of the statement would show another session
        page = answer.result().text
    assert len(sessions) == 1, sessions
    assert "probe_success: 0" in page


def test_probes_of_a_silent_postgresql_host_leave_no_connection_open(tmp_path: Path, silent_port: int) -> None:
    dsn = f"postgresql+psycopg://exporter:secret@127.0.0.1:{silent_port}/probe"
    config = write_config(
        tmp_path, {"pg": target(dsn, "one", timeout="2s")}, {"one": {"one": metric("select 1 as n", "n")}}
    )
    with client_for(config) as client:
        for _ in range(2):
            assert value(parse_samples(client.get("/probe", params={"target": "pg"}).text), "probe_success") == 0.0
        # Each connect gives up at the deadline (libpq's whole seconds); its socket must not outlive it.
        assert wait_until(lambda: connections_to(os.getpid(), silent_port) == 0, 2), connections_to(
            os.getpid(), silent_port
        )
