"""A huge result costs sqlprobe max_rows rows of memory, not the result's size; the rest is stopped on the server."""

from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

from tests.helpers import client_for, metric, parse_samples, probe_views, target, value, wait_until, write_config
from tests.served import Served, serve
from tests.servers import MariaDB

MiB = 1024 * 1024
HUGE = "select seq as i, seq * 2 as v from seq_1_to_2000000"
SETS = {
    "small": {"one": metric("select 1 as v", "v")},
    "huge": {"huge": {**metric(HUGE, "v", "i"), "max_rows": 1000}},
}


def _rss(served: Served) -> int:
    status = Path(f"/proc/{served.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024


def _running(server: MariaDB, table: str = "seq_1_to_2000000") -> int:
    """Sessions on the server still running a query of ``table`` (not counting this look at the process list)."""
    sql = f"select count(*) from information_schema.processlist where info like '%{table}%' and id <> connection_id()"
    return int(server.root_query(sql)[0][0])


def test_a_2_000_000_row_result_with_max_rows_1000_is_cut_there_and_stopped_on_the_server(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    targets = {"db": target(server.dsn, "small", "huge", timeout="60s")}
    with serve(tmp_path, targets, SETS) as served:
        small = httpx.get(f"{served.url}/probe", params={"target": "db", "query_set": "small"}, timeout=60)
        assert value(parse_samples(small.text), "probe_success") == 1.0  # the engine and a connection exist now
        before = _rss(served)
        response = httpx.get(f"{served.url}/probe", params={"target": "db", "query_set": "huge"}, timeout=60)
        grown = _rss(served) - before
        samples = parse_samples(response.text)
        debug = httpx.get(
            f"{served.url}/probe", params={"target": "db", "query_set": "huge", "debug": "1"}, timeout=60
        ).text
    expected = dict(server.query(HUGE + " limit 1000"))
    assert {int(labels[0][1]): number for labels, number in samples["query_exporter_huge"].items()} == {
        i: float(v) for i, v in expected.items()
    }
    assert value(samples, "probe_success") == 1.0
    assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
    assert "rows: 1001 (the result was cut there, past max_rows: the rest was never read)" in debug
    assert "skipped rows: max_rows=1" in debug
    assert wait_until(lambda: _running(server) == 0, 10), "the statement still runs on the server"


def test_parameter_runs_share_one_row_bound_and_stop_at_it(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    sql = "select concat(:tag, seq) as name, seq as v from seq_1_to_1000000"
    query_sets = {
        "runs": {"runs": {**metric(sql, "v", "name"), "max_rows": 5, "parameters": [{"tag": "a"}, {"tag": "b"}]}}
    }
    config = write_config(tmp_path, {"db": target(server.dsn, "runs")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    # The first run alone fills the bound: its first five rows, and the second run never starts.
    expected = {f"a{i}": float(i) for i in range(1, 6)}
    assert {labels[0][1]: number for labels, number in views.samples["runs"].items()} == expected
    assert "skipped rows: max_rows=1" in views.debug
    assert wait_until(lambda: _running(server, "seq_1_to_1000000") == 0, 10)


def test_a_label_over_max_label_length_skips_the_row_of_a_several_values_metric(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = "select repeat('x', 20) as name, 1 as a, 2 as b union all select 'short', 3, 4"
    wide = {"query": sql, "type": "gauge", "description": "d", "labels": ["name"], "values": ["a", "b"]}
    query_sets = {"wide": {"wide": {**wide, "max_label_length": 10}}}
    config = write_config(tmp_path, {"db": target(server.dsn, "wide")}, query_sets, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert {dict(labels)["column"]: number for labels, number in views.samples["wide"].items()} == {"a": 3.0, "b": 4.0}
    assert "skipped rows: label_too_long=1" in views.debug
