"""A big answer is rendered off the event loop: while it renders, other probes are answered."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.probe.results import ProbeResult
from app.web.exposition import render_probe
from tests.helpers import client_for, metric, parse_samples, target, value, write_config

ROWS = 3000  # above what is rendered on the loop
BIG = f"with recursive n(i) as (select 1 union all select i + 1 from n where i < {ROWS}) select i as v, i as k from n"


@pytest.mark.parametrize(
    ("path", "params"),
    [("/probe", {"target": "big"}), ("/probe", {"target": "big", "debug": "true"}), ("/logs", {"target": "big"})],
    ids=["probe", "debug", "logs"],
)
def test_a_probe_is_answered_while_a_big_answer_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, params: dict[str, str]
) -> None:
    # Six debug probes of a 500,000-row result, each rendered on the event loop, held every other probe back for
    # five seconds. Here the big answer's rendering waits until the small probe was answered: rendered on the
    # loop, it could not be before the wait ends.
    sets = {
        "big": {"big": metric(BIG, "v", "k") | {"max_rows": ROWS}},
        "small": {"small": metric("select 1 as v", "v")},
    }
    config = write_config(tmp_path, {"big": target("sqlite://", "big"), "small": target("sqlite://", "small")}, sets)
    rendering, answered, holding = threading.Event(), threading.Event(), threading.Event()

    def held(result: ProbeResult, accept: str | None) -> Any:
        if holding.is_set() and any(query.rows == ROWS for query in result.queries):
            rendering.set()
            answered.wait(10)
        return render_probe(result, accept)

    # Where /probe and /logs look it up.
    monkeypatch.setattr("app.web.probe_endpoint.render_probe", held)
    monkeypatch.setattr("app.web.report.render_probe", held)
    finished: list[str] = []
    with client_for(config) as client, ThreadPoolExecutor(1) as pool:
        client.get("/probe", params={"target": "big"})  # for /logs: a probe to tell of
        holding.set()
        big = pool.submit(client.get, path, params=params)
        big.add_done_callback(lambda _: finished.append("big"))
        assert rendering.wait(30)
        small = client.get("/probe", params={"target": "small"})
        finished.append("small")
        answered.set()
        big_text = big.result().text
    assert value(parse_samples(small.text), "query_exporter_small") == 1.0
    assert big_text.count("query_exporter_big{") >= ROWS
    assert finished == ["small", "big"]
