"""Row names come from the database, that is from whoever can name a table or a variable: none of them can freeze
the served process through a ``families`` pattern."""

from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

from tests.helpers import parse_samples, target, value
from tests.served import serve
from tests.servers import MariaDB

# Python's re (a backtracking matcher) takes 2^n steps to find that n a's and a "!" do not match (a+)+b: 27 froze
# the process for seconds, 60 would take centuries. A probe is answered long before the client gives up.
A_RUN = 60
CLIENT_TIMEOUT = 30.0


def test_a_row_name_that_makes_a_backtracking_pattern_explode_is_matched_at_once(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    sql = f"select concat(repeat('a', {A_RUN}), '!') as n, 1 as v union all select 'aab', 2"
    metric = {
        "query": sql,
        "type": "gauge",
        "description": "d",
        "name_from": "n",
        "value": "v",
        "families": [{"match": "(a+)+b", "name": "abs", "type": "gauge", "description": "a's then b"}],
    }
    rows = server.query(sql)
    with serve(tmp_path, {"db": target(server.dsn, "s")}, {"s": {"s": metric}}) as served:
        response = httpx.get(f"{served.url}/probe", params={"target": "db"}, timeout=CLIENT_TIMEOUT)
        ready = httpx.get(f"{served.url}/-/ready", timeout=CLIENT_TIMEOUT)
    samples = parse_samples(response.text)
    hostile, plain = (str(n) for n, _ in rows)
    assert value(samples, "query_exporter_s_" + hostile.replace("!", "_")) == 1.0  # no match: its own family
    assert value(samples, "query_exporter_s_abs") == 2.0  # plain matched the rule
    assert plain == "aab"
    assert value(samples, "probe_success") == 1.0
    assert ready.status_code == 200
