"""A target's session_settings are in effect in its probes' sessions, on the first probe of a connection and after
each reset, with no statement of their own; the expected values are what the server makes of the same SET."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.config import load_config
from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

MARIADB_SETTINGS: dict[str, Any] = {
    "long_query_time": 123.5,
    "log_slow_query": False,  # YAML's off: keeps sqlprobe's statements out of the slow log
    "max_statement_time": 7,
    "net_read_timeout": 45,
    "time_zone": "+02:00",
}
MARIADB_SQL = (
    "select connection_id() as id, @@session.long_query_time as long_query_time,"
    " @@session.log_slow_query as log_slow_query, @@session.max_statement_time as max_statement_time,"
    " @@session.net_read_timeout as net_read_timeout, @@session.time_zone = '+02:00' as time_zone"
)
MARIADB_COLUMNS = ("id", "long_query_time", "log_slow_query", "max_statement_time", "net_read_timeout", "time_zone")


def _probes(config: Any, name: str, count: int) -> list[Any]:
    with client_for(config) as client:
        return [parse_samples(client.get("/probe", params={"target": name}).text) for _ in range(count)]


def test_mariadb_session_settings_hold_on_every_probe_of_a_reused_session(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sets = {"s": {column: metric(MARIADB_SQL, column) for column in MARIADB_COLUMNS}}
    spec = {**target(server.dsn, "s"), "session_settings": MARIADB_SETTINGS}
    probes = _probes(write_config(tmp_path, {"db": spec}, sets), "db", 2)
    # What the server makes of the same settings in a session of the exporter user.
    connection = server.exporter_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SET SESSION long_query_time = 123.5, log_slow_query = OFF, max_statement_time = 7,"
                " net_read_timeout = 45, time_zone = '+02:00'"
            )
            cursor.execute(MARIADB_SQL)
            expected = dict(zip(MARIADB_COLUMNS, cursor.fetchone(), strict=True))
    finally:
        connection.close()
    first = value(probes[0], "query_exporter_id")
    for samples in probes:
        assert value(samples, "query_exporter_id") == first  # the same session, reset between the probes
        for column in MARIADB_COLUMNS[1:]:
            assert value(samples, f"query_exporter_{column}") == float(expected[column]), column
    # Not the server's defaults: the settings are the target's.
    assert server.query("select @@session.long_query_time, @@session.max_statement_time") != [(123.5, 7)]


def test_defaults_and_a_targets_own_session_settings_merge_name_by_name(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select @@session.long_query_time as lqt, @@session.net_read_timeout as nrt"
    (tmp_path / "queries.yml").write_text(
        "query_sets:\n  s:\n"
        + "".join(
            f"    {column}:\n      query: {sql!r}\n      type: gauge\n      description: d\n      value: {column}\n"
            for column in ("lqt", "nrt")
        )
    )
    (tmp_path / "targets.yml").write_text(
        "defaults:\n  session_settings: {long_query_time: 50, net_read_timeout: 40}\n"
        f"targets:\n  db:\n    dsn: {server.dsn!r}\n    query_sets: [s]\n    session_settings: {{net_read_timeout: 41}}\n"
    )
    config = load_config(tmp_path / "targets.yml", tmp_path / "queries.yml", environ={})
    samples = _probes(config, "db", 1)[0]
    assert value(samples, "query_exporter_lqt") == 50.0
    assert value(samples, "query_exporter_nrt") == 41.0


POSTGRES_SETTINGS: dict[str, Any] = {
    "work_mem": "8MB",
    "application_name": "sqlprobe_probe",
    "jit": False,
    "statement_timeout": "3s",
}
POSTGRES_SETTINGS_SQL = (
    "select pg_backend_pid() as pid,"
    " (select setting::float from pg_settings where name = 'work_mem') as work_mem,"
    " (current_setting('application_name') = 'sqlprobe_probe')::int as application_name,"
    " (current_setting('jit') = 'off')::int as jit,"
    " (select setting::float from pg_settings where name = 'statement_timeout') as statement_timeout"
)
POSTGRES_COLUMNS = ("pid", "work_mem", "application_name", "jit", "statement_timeout")


def test_postgresql_session_settings_hold_after_a_probe_changed_them(tmp_path: Path, postgres: PostgreSQL) -> None:
    # A probe's own statement sets work_mem for its session; the reset at its end gives the target's back.
    changes = metric("select set_config('work_mem', '1MB', false) is not null as changed", "changed")
    sets = {"s": {**{column: metric(POSTGRES_SETTINGS_SQL, column) for column in POSTGRES_COLUMNS}, "c": changes}}
    spec = {**target(postgres.dsn, "s", timeout="5s"), "session_settings": POSTGRES_SETTINGS}
    probes = _probes(write_config(tmp_path, {"pg": spec}, sets), "pg", 2)
    with postgres.exporter_connection() as connection:
        connection.execute("SET work_mem = '8MB'")
        connection.execute("SET application_name = 'sqlprobe_probe'")
        connection.execute("SET jit = off")
        connection.execute("SET statement_timeout = '3s'")
        row = connection.execute(POSTGRES_SETTINGS_SQL).fetchone()
    assert row is not None
    expected = dict(zip(POSTGRES_COLUMNS, row, strict=True))
    first = value(probes[0], "query_exporter_pid")
    for samples in probes:
        assert value(samples, "query_exporter_pid") == first  # the same session both times
        assert value(samples, "query_exporter_c") == 1.0
        for column in POSTGRES_COLUMNS[1:]:
            assert value(samples, f"query_exporter_{column}") == float(expected[column]), column
