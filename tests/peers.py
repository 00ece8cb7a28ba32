"""The exporters sqlprobe-convert is checked against, run for real: query-exporter from .venv-peers (make peers)."""

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Samples
from tests.servers import free_port, stop_process

ROOT = Path(__file__).parent.parent
QUERY_EXPORTER = ROOT / ".venv-peers" / "bin" / "query-exporter"
# query-exporter's own metrics, which sqlprobe answers with its own (sqlprobe_query_success, …).
QUERY_EXPORTER_BUILTINS = frozenset(
    {"database_errors", "queries", "query_latency", "query_timestamp", "query_interval"}
)


@contextmanager
def query_exporter(config: Path, environ: Mapping[str, str], log: Path) -> Iterator[str]:
    """Run query-exporter on ``config`` on a free loopback port; yield its /metrics URL."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(QUERY_EXPORTER), "--config", str(config), "-H", "127.0.0.1", "-p", str(port)],
            env=dict(environ),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        stop_process(process, 15)


def scrape(url: str, attempts: int = 100) -> str:
    """The text at ``url`` once it answers (at most ``attempts`` tries, 0.1 s apart, each within 10 s)."""
    error: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: bytes = response.read()
                return body.decode()
        except (urllib.error.URLError, ConnectionError) as failure:
            error = failure
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered: {error}")


def user_samples(text: str, exclude: frozenset[str]) -> Samples:
    """Samples of ``text`` outside the families in ``exclude``, without counters' ``_created`` samples.

    prometheus-client adds ``_created`` to every counter; sqlprobe exports none (docs/migrating.md).
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name in exclude:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
