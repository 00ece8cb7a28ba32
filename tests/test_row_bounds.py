"""A huge result costs sqlprobe max_rows rows of memory, not the result's size; the rest is stopped on the server."""

from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

from tests.helpers import metric, parse_samples, target, value, wait_until
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


def _running(server: MariaDB) -> int:
    """Sessions on the server still running the huge query (not counting this look at the process list)."""
    sql = (
        "select count(*) from information_schema.processlist "
        "where info like '%seq_1_to_2000000%' and id <> connection_id()"
    )
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
