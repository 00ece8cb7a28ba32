"""Signals that arrive while sqlprobe starts: a reload asked for too early is not the end of the process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from tests.servers import free_port

TARGETS = 'targets:\n  demo: {dsn: "sqlite://", query_sets: [sqlite_demo]}\n'


def test_a_sighup_while_sqlprobe_starts_does_not_end_it(tmp_path: Path) -> None:
    # systemd's `reload` right after `start` (Type=exec returns at exec): the handler that reloads is installed with
    # the app, after the imports and the config load; before it, SIGHUP's default action ended the process.
    (tmp_path / "targets.yml").write_text(TARGETS)
    port = free_port()
    command = [sys.executable, "-m", "app", "--targets", str(tmp_path / "targets.yml"), "--bind", f"127.0.0.1:{port}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        time.sleep(0.2)  # inside the imports
        process.send_signal(signal.SIGHUP)
        healthy = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        assert process.poll() is None, f"sqlprobe ended: status {process.returncode}"
        assert healthy
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(10)
    assert status == 0
