"""A probe's statements reach MySQL/MariaDB in one write (one query text), and a statement that fails costs only its
own query and one more text for the rest: counted in the server's own general log."""

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import client_for, metric, parse_samples, target, value, write_config
from tests.servers import MariaDB


@contextmanager
def general_log(server: MariaDB) -> Iterator[None]:
    """Every command the server receives in mysql.general_log, while the block runs."""
    server.execute("set global log_output = 'TABLE'", "truncate table mysql.general_log", "set global general_log = 1")
    try:
        yield
    finally:
        server.execute("set global general_log = 0")


def texts_sent(server: MariaDB, marker: str) -> list[str]:
    """The query texts the server received that mention ``marker``, in order."""
    rows = server.root_query(
        "select argument from mysql.general_log where command_type = 'Query' "
        f"and argument like '%{marker}%' order by event_time"
    )
    return [row[0].decode() if isinstance(row[0], bytes) else str(row[0]) for row in rows]


def three_queries(marker: str, middle: str) -> dict[str, Any]:
    return {
        "first": metric(f"select 11 as first_value, '{marker}' as marker", "first_value"),
        "second": metric(middle, "second_value"),
        "third": metric(f"select 33 as third_value, '{marker}' as marker", "third_value"),
    }


def probe(tmp_path: Path, server: MariaDB, metrics: dict[str, Any], times: int) -> list[dict[Any, Any]]:
    config = write_config(tmp_path, {"db": target(server.dsn, "set")}, {"set": metrics})
    with client_for(config) as client:
        return [parse_samples(client.get("/probe", params={"target": "db"}).text) for _ in range(times)]


def test_a_probes_three_queries_reach_the_server_as_one_text_on_a_reused_connection(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    marker = f"m{secrets.token_hex(4)}"
    metrics = three_queries(marker, f"select 22 as second_value, '{marker}' as marker")
    with general_log(server):
        probes = probe(tmp_path, server, metrics, 3)
    sent = texts_sent(server, marker)
    server.execute("truncate table mysql.general_log")
    # One text per probe, each holding all three statements, each in a read-only transaction of its own. On the
    # pooled connection (the third probe on), the text carries sqlprobe's settings after the session's reset too;
    # the target's first reset (the second probe's) goes alone with them, in case the server refuses it.
    assert [text.count(marker) for text in sent] == [3, 3, 3]
    assert [text.count("START TRANSACTION READ ONLY") for text in sent] == [3, 2, 3]
    assert "SET SESSION" in sent[2]
    for samples in probes:
        assert value(samples, "probe_success") == 1.0
        assert value(samples, "query_exporter_first") == 11.0
        assert value(samples, "query_exporter_second") == 22.0
        assert value(samples, "query_exporter_third") == 33.0


def test_a_failed_statement_fails_its_query_alone_and_the_rest_is_sent_once_more(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    marker = f"m{secrets.token_hex(4)}"
    metrics = three_queries(marker, f"select second_value, '{marker}' as marker from no_such_table")
    with general_log(server):
        (samples,) = probe(tmp_path, server, metrics, 1)
    sent = texts_sent(server, marker)
    server.execute("truncate table mysql.general_log")
    assert value(samples, "probe_success") == 0.0
    assert value(samples, "query_exporter_first") == 11.0
    assert value(samples, "query_exporter_third") == 33.0
    assert "query_exporter_second" not in samples
    assert value(samples, "sqlprobe_query_success", metric="second") == 0.0
    # The whole probe in one text; the server stopped at the failed statement, so the third was sent once more.
    assert len(sent) == 2
    assert sent[0].count(marker) == 3
    assert sent[1].count(marker) == 1
    assert "33 as third_value" in sent[1]


def test_a_query_cut_at_its_rows_bound_is_read_to_its_end_then_ends_its_write(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[1]
    marker = f"m{secrets.token_hex(4)}"
    many = metric(
        f"select seq as second_value, seq as n, '{marker}' as marker from seq_1_to_50000", "second_value", "n"
    )
    metrics = three_queries(marker, "") | {"second": {**many, "max_rows": 10}}
    with general_log(server):
        probes = probe(tmp_path, server, metrics, 2)
    sent = texts_sent(server, marker)
    server.execute("truncate table mysql.general_log")
    # The first probe in one text, the cut result read to its end (the server may have run the third query
    # already). Past 256 KiB, the second query ends its write from then on: its connection is closed under the
    # rest, and the third query goes on a new one.
    assert [text.count(marker) for text in sent] == [3, 2, 1]
    for samples in probes:
        assert value(samples, "query_exporter_first") == 11.0
        assert value(samples, "query_exporter_third") == 33.0
        # The first max_rows rows of the 50,000.
        assert sorted(samples["query_exporter_second"].values()) == [float(n) for n in range(1, 11)]
        assert value(samples, "probe_success") == 1.0
