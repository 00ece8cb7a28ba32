"""What a statement of queries.yml leaves behind on its session: no way to write, no lock, nothing the next probe sees."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, write_config
from tests.postgres import PostgreSQL
from tests.servers import MariaDB

WRITER = "leftover_writer"
ROWS = 3


@pytest.fixture
def scratch(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A table of ROWS rows and a user that may read and change it."""
    server = fleet[1]
    server.execute(
        "create table probe.leftover (id int)",
        "insert into probe.leftover values " + ", ".join(f"({row})" for row in range(ROWS)),
        f"create user '{WRITER}'@'127.0.0.1' identified by '{server.password}'",
        f"grant select, insert, delete on probe.* to '{WRITER}'@'127.0.0.1'",
    )
    yield server
    server.execute("drop table probe.leftover", f"drop user '{WRITER}'@'127.0.0.1'")


def _writer_dsn(server: MariaDB) -> str:
    return f"mysql+pymysql://{WRITER}:{server.password}@127.0.0.1:{server.port}/probe"


def _count(server: MariaDB) -> int:
    ((count,),) = server.root_query("select count(*) from probe.leftover")
    return int(count)


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        ("check table leftover", None),
        ("analyze table leftover", None),
        ("check table leftover /* :tag */", [{"tag": "bound by the driver"}]),
    ],
)
def test_a_statement_that_commits_implicitly_and_returns_rows_lets_no_later_one_write(
    tmp_path: Path, scratch: MariaDB, statement: str, parameters: list[dict[str, str]] | None
) -> None:
    # CHECK/ANALYZE TABLE end the transaction they run in (an implicit commit) and return a result set; after them
    # the session is in autocommit, where SET STATEMENT tx_read_only = 0 FOR DELETE deletes.
    checked = metric(statement, "Msg_text") | ({"parameters": parameters} if parameters else {})
    sets = {
        "turn": {"checked": checked},
        "writes": {"deleted": metric("set statement tx_read_only = 0 for delete from leftover returning 1 as n", "n")},
    }
    config = write_config(tmp_path, {"db": target(_writer_dsn(scratch), "turn", "writes")}, sets)
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert _count(scratch) == ROWS
    assert value(views.samples, "sqlprobe_query_success", metric="deleted") == 0.0
    assert "the statement ended the read-only transaction (its connection was closed)" in views.debug
    assert "Cannot execute statement in a READ ONLY transaction" in views.debug


@pytest.mark.xfail(
    strict=True, reason="not fixed: needs RELEASE_ALL_LOCKS() or COM_RESET_CONNECTION at release (docs/correctness.md)"
)
def test_a_named_lock_taken_by_a_statement_is_not_held_after_the_probe(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sets = {"lock": {"locked": metric("select get_lock('sqlprobe_leftover', 0) as n", "n")}}
    config = write_config(tmp_path, {"db": target(server.dsn, "lock")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
        assert value(samples, "query_exporter_locked") == 1.0
        # Another session (the operator's job) can take it while sqlprobe's connection waits in the pool.
        assert server.query("select is_free_lock('sqlprobe_leftover')") == [(1,)]


def test_a_postgresql_advisory_lock_taken_by_a_statement_is_not_held_after_the_probe(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    sets = {"lock": {"locked": metric("select pg_try_advisory_lock(4242)::int as n", "n")}}
    config = write_config(tmp_path, {"pg": target(postgres.dsn, "lock")}, sets)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "pg"}).text)
        assert value(samples, "query_exporter_locked") == 1.0
        assert postgres.query("select count(*) from pg_locks where locktype = 'advisory' and objid = 4242") == [(0,)]


@pytest.mark.xfail(strict=True, reason="not fixed: needs COM_RESET_CONNECTION at release (docs/correctness.md)")
def test_user_variables_set_by_a_statement_do_not_reach_the_next_probe(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select @sqlprobe_n := coalesce(@sqlprobe_n, 0) + 1 as n"
    config = write_config(tmp_path, {"db": target(server.dsn, "count")}, {"count": {"n": metric(sql, "n")}})
    with client_for(config) as client:
        for _ in range(3):
            samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "query_exporter_n") == 1.0
