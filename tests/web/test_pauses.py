"""sqlprobe's own metrics say when probes waited for sqlprobe: the event loop running late, the collector's pauses."""

import gc
import time
from pathlib import Path
from typing import Any

import pytest

from app.probe.results import ProbeResult
from app.web.exposition import render_probe
from tests.helpers import client_for, metric, parse_samples, target, value, wait_until, write_config

BLOCKED = 0.5  # seconds the loop is held


def test_a_stalled_event_loop_shows_in_the_lag_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"db": target("sqlite://", "one")}, {"one": {"one": metric("select 1 as v", "v")}})

    def stalling(result: ProbeResult, accept: str | None) -> Any:
        time.sleep(BLOCKED)  # a small answer renders on the loop: this holds it
        return render_probe(result, accept)

    with client_for(config) as client:
        before = parse_samples(client.get("/metrics").text)
        monkeypatch.setattr("app.web.probe_endpoint.render_probe", stalling)
        client.get("/probe", params={"target": "db"})
        monkeypatch.undo()

        def seen() -> bool:
            samples = parse_samples(client.get("/metrics").text)
            return value(samples, "sqlprobe_event_loop_lag_max_seconds") >= BLOCKED - 0.15

        assert wait_until(seen, 5)
        after = parse_samples(client.get("/metrics").text)
    assert value(before, "sqlprobe_event_loop_lag_max_seconds") < BLOCKED - 0.15
    late = value(after, "sqlprobe_event_loop_lag_seconds_count") - value(
        after, "sqlprobe_event_loop_lag_seconds_bucket", le="0.25"
    )
    assert late >= 1  # at least one timer ran more than 0.25 s late


def test_a_full_collection_shows_in_the_gc_pause_metrics(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"db": target("sqlite://", "one")}, {"one": {"one": metric("select 1 as v", "v")}})
    with client_for(config) as client:
        before = parse_samples(client.get("/metrics").text)
        gc.collect()
        after = parse_samples(client.get("/metrics").text)
    full = "sqlprobe_gc_pause_seconds_count"
    assert value(after, full, generation="2") >= value(before, full, generation="2") + 1
    assert value(after, "sqlprobe_gc_pause_seconds_sum", generation="2") > 0
