"""Statements a MariaDB ran, one by one: its slow log with every statement in it (long_query_time=0), where the
general log holds only each text as a whole (a probe's statements are one text: app/probe/pipelined.py)."""

from collections.abc import Iterator
from contextlib import contextmanager

from tests.servers import MariaDB


@contextmanager
def statement_log(server: MariaDB) -> Iterator[None]:
    """Every statement the server runs in mysql.slow_log (for the sessions opened while the block runs)."""
    server.execute(
        "set global log_output = 'TABLE'",
        "truncate table mysql.slow_log",
        "set global long_query_time = 0",
        "set global slow_query_log = 1",
    )
    try:
        yield
    finally:
        server.execute("set global slow_query_log = 0", "set global long_query_time = 10")


def runs_of(server: MariaDB, marker: str) -> int:
    """How many times the server ran a statement holding ``marker`` (while statement_log was on)."""
    rows = server.root_query(f"select count(*) from mysql.slow_log where sql_text like '%{marker}%'")
    return int(rows[0][0])
