"""--log-format json: one JSON object per line, with the event's target and metric names."""

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.helpers import metric, target
from tests.served import serve

SETS = {
    "basic": {
        "answer": metric("select 42 as n", "n"),
        "rows": metric("select 1 as n", "n"),
    }
}
PASSWORD = "pw-unique-4b1d2c"


def _events(text: str) -> list[dict[str, Any]]:
    """Every line of the log as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_logs_carry_startup_and_each_probe_failure_with_target_and_metrics(
    tmp_path: Path, closed_port: int
) -> None:
    targets = {
        "fine": target("sqlite://", "basic"),
        "dead": target(f"mysql+pymysql://exporter:{PASSWORD}@127.0.0.1:{closed_port}/", "basic"),
    }
    with serve(tmp_path, targets, SETS, "--log-format", "json") as running:
        for name in ("fine", "dead", "dead"):
            assert httpx.get(f"{running.url}/probe", params={"target": name}).status_code == 200
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0
    text = running.log.read_text()
    events = _events(text)
    assert all({"time", "level", "logger", "message"} <= event.keys() for event in events)
    (startup,) = [event for event in events if event.get("event") == "startup"]
    assert (startup["targets"], startup["bind"]) == (2, running.url.removeprefix("http://"))
    failures = [event for event in events if event.get("event") == "probe_failed"]
    assert [event["target"] for event in failures] == ["dead", "dead"]
    for event in failures:
        (failure,) = event["failures"]
        assert failure["reason"] == "connect"
        assert failure["metrics"] == ["answer", "rows"]
        assert "Connection refused" in failure["error"]
    assert PASSWORD not in text


def test_text_logs_say_the_same_in_one_line_per_probe_failure(tmp_path: Path, closed_port: int) -> None:
    # psycopg's connection errors span two lines; the log keeps them on one.
    targets = {
        "dead": target(f"mysql+pymysql://exporter:{PASSWORD}@127.0.0.1:{closed_port}/", "basic"),
        "pgdead": target(f"postgresql+psycopg://exporter:{PASSWORD}@127.0.0.1:{closed_port}/db", "basic"),
    }
    with serve(tmp_path, targets, SETS) as running:
        for name in targets:
            httpx.get(f"{running.url}/probe", params={"target": name})
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0
    log = running.log.read_text()
    for name in targets:
        lines = [line for line in log.splitlines() if f"probe of target {name} failed" in line]
        assert len(lines) == 1
        assert f" INFO app.web.probe_endpoint: probe of target {name} failed: connect: " in lines[0]
        assert lines[0].endswith("(metrics: answer, rows)")
    assert PASSWORD not in log


def test_json_logs_list_every_config_problem_when_sqlprobe_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "targets.yml").write_text(
        "targets:\n  one:\n    dsn: sqlite://\n    query_sets: [basic]\n    timeout: soon\n    colour: red\n"
    )
    (tmp_path / "queries.yml").write_text(
        "query_sets:\n  basic:\n    up: {query: select 1 as n, type: gauge, description: d, value: n}\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "sqlprobe"),
            "--targets", str(tmp_path / "targets.yml"),
            "--queries", str(tmp_path / "queries.yml"),
            "--log-format", "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    (event,) = _events(result.stderr)
    assert (event["event"], event["level"]) == ("config_invalid", "error")
    assert event["problems"] == [
        f"{tmp_path / 'targets.yml'}:5: targets.one.timeout: 'soon' is not a duration such as 500ms, 10s or 1m",
        f"{tmp_path / 'targets.yml'}:6: targets.one.colour: unknown key",
    ]
