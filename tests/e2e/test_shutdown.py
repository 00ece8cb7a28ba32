"""SIGTERM while a probe gives up: the statement it leaves running is still stopped on the server."""

import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from tests.faults.test_fault_suite import QUICK_SET, assert_log_clean
from tests.helpers import metric, parse_samples, target, value, wait_until
from tests.relay import Relay
from tests.served import serve
from tests.servers import MariaDB

# Waits for a row lock the test holds (InnoDB: up to innodb_lock_wait_timeout, 50 s), and, unlike SLEEP(), goes on
# waiting when its client is gone: only a KILL QUERY ends it early.
WAITING_SQL = "select count(*) as n from items lock in share mode"
# The kill's connection reaches the server this late (a slow network): after the shutdown began, well within the
# time a kill may take (app/drivers/dialect.py: CANCEL_TIMEOUT, 5 s).
KILL_DELAY = 2.0


def test_sigterm_as_a_probe_gives_up_still_stops_its_statement_on_the_server(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]

    def waiting() -> bool:
        return any(info == WAITING_SQL for _, _, info in server.exporter_sessions())

    with Relay([server.port]) as relay, server.root_connection() as holder, holder.cursor() as locking:
        locking.execute("begin")
        locking.execute("select count(*) from probe.items for update")
        dsn = server.dsn.replace(f":{server.port}/", f":{relay.port}/")
        sets = {"quick": QUICK_SET, "waiting": {"n": metric(WAITING_SQL, "n")}}
        with serve(tmp_path, {"db": target(dsn, "quick", "waiting")}, sets) as served, ThreadPoolExecutor(1) as pool:
            url = f"{served.url}/probe"
            warm = httpx.get(url, params={"target": "db", "query_set": "quick"}, timeout=10)
            assert value(parse_samples(warm.text), "probe_success") == 1.0
            relay.delay = KILL_DELAY  # new connections only: the probe's own is pooled already
            headers = {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
            in_flight = pool.submit(
                httpx.get, url, params={"target": "db", "query_set": "waiting"}, headers=headers, timeout=10
            )
            assert wait_until(waiting, 5)
            served.process.send_signal(signal.SIGTERM)
            answer = in_flight.result()
            assert served.process.wait(15) == 0
        # sqlprobe is gone; the statement it gave up on must not wait on for the rest of its 50 s.
        stopped = wait_until(lambda: not waiting(), KILL_DELAY + 3)
        locking.execute("rollback")
    assert value(parse_samples(answer.text), "probe_success") == 0.0
    assert stopped, server.exporter_sessions()
    assert_log_clean(served, server.password)
