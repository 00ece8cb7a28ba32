"""A real Prometheus server for the end-to-end tests, started from a config of the test's choosing."""

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import yaml

from tests.servers import free_port

# Scrape and discover as often as Prometheus allows, so a test waits seconds, not minutes.
TEST_INTERVAL = "1s"
Found = TypeVar("Found")


def prometheus_binary() -> str | None:
    """Path of Debian's prometheus, or None when it is not installed."""
    return shutil.which("prometheus")


def config_for_test(config_text: str, addresses: Mapping[str, str]) -> dict[str, Any]:
    """A shipped Prometheus config with its exporter addresses replaced and every interval at one second."""
    for shipped, actual in addresses.items():
        config_text = config_text.replace(shipped, actual)
    config: dict[str, Any] = yaml.safe_load(config_text)
    config["global"] |= {"scrape_interval": TEST_INTERVAL, "scrape_timeout": TEST_INTERVAL}
    for job in config["scrape_configs"]:
        for discovery in job.get("http_sd_configs", []):
            discovery["refresh_interval"] = TEST_INTERVAL
    return config


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    log: Path

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """The instant vector ``expression`` evaluates to now: (labels, value) per series."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["data"]["resultType"] == "vector", body
        return [(series["metric"], float(series["value"][1])) for series in body["data"]["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now, as /api/v1/alerts lists them (labels, state, annotations…)."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return alerts

    def wait_for(self, what: str, check: Callable[[], Found | None], seconds: float = 45) -> Found:
        """Poll ``check`` until it returns something; fail with ``what`` and Prometheus's log after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            found = check()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus never showed {what}; its log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)


@contextmanager
def running_prometheus(binary: str, config: Mapping[str, Any]) -> Iterator[Prometheus]:
    """Prometheus with ``config`` on a free port and a throwaway TSDB; stopped after."""
    with tempfile.TemporaryDirectory(prefix="sqlprobe-prometheus-") as tmp:
        root = Path(tmp)
        (root / "prometheus.yml").write_text(yaml.safe_dump(dict(config)))
        log = root / "prometheus.log"
        port = free_port()
        with log.open("w") as output:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", log)
        try:
            server.wait_for("readiness", lambda: _ready(server.url) or None, seconds=30)
            yield server
        finally:
            process.terminate()
            process.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
