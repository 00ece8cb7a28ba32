"""promtool accepts what sqlprobe serves: on success, on failure, for the shipped query sets and on /metrics."""

import asyncio
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app.config import load_config
from app.drivers.engine_cache import EngineCache
from app.probe.prober import Prober
from app.probe.results import ProbeResult
from app.web.exposition import (
    OPENMETRICS,
    PROBE_DURATION,
    PROBE_SUCCESS,
    QUERY_DURATION,
    QUERY_SUCCESS,
    RESULT_AGE,
    TEXT,
    _number,
    render_probe,
)
from tests.helpers import ITEMS_SET, client_for, target, write_config
from tests.paths import ROOT_DIR
from tests.servers import MariaDB

OPENMETRICS_1 = "application/openmetrics-text; version=1.0.0"

SHIPPED = ROOT_DIR


def promtool_check(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``text``."""
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


def test_promtool_accepts_probes_and_own_metrics(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, promtool: str
) -> None:
    odd = {
        "odd_labels": {
            "query": "select 'say \"hi\"\\n' as name, 1 as n union all select null, 2",
            "type": "counter",
            "description": "labels that need escaping",
            "labels": ["name"],
            "value": "n",
        }
    }
    targets = {
        "good": target(fleet[0].dsn, "items", "odd"),
        "dead": target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items"),
    }
    config = write_config(tmp_path, targets, {"items": ITEMS_SET, "odd": odd})
    with client_for(config) as client:
        pages = {name: client.get("/probe", params={"target": name}).text for name in targets}
        pages["/metrics"] = client.get("/metrics").text
    assert "query_exporter_odd_labels_total" in pages["good"]
    for name, text in pages.items():
        result = promtool_check(promtool, text)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name


def test_promtool_accepts_probes_of_every_shipped_query_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleet: Sequence[MariaDB], promtool: str
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo target's SQLite file is created in the working directory
    queries = load_config(SHIPPED / "targets.yml", SHIPPED / "queries.yml", environ={"MYSQL_EXPORTER_PASSWORD": ""})
    mysql_sets = [
        name for name in queries.query_sets if not name.startswith(("sqlite_", "postgresql_", "mysqld_exporter"))
    ]
    (tmp_path / "targets.yml").write_text(
        yaml.safe_dump(
            {
                "targets": {
                    "demo": target("sqlite:///demo.sqlite", "sqlite_demo"),
                    "db": target(fleet[0].dsn, *mysql_sets),
                    "mysqld": target(fleet[0].dsn, "mysqld_exporter"),
                }
            }
        )
    )
    config = load_config(tmp_path / "targets.yml", SHIPPED / "queries.yml", environ={})
    with client_for(config) as client:
        pages = {name: client.get("/probe", params={"target": name}).text for name in config.targets}
    assert "query_exporter_mysql_schema_data_bytes" in pages["db"]
    assert "mysql_global_status_commands_total" in pages["mysqld"]
    for name, text in pages.items():
        result = promtool_check(promtool, text)
        if name == "mysqld":
            # mysqld_exporter's own names, kept on purpose, break promtool's naming advice (max_error_count is
            # no summary's count): its lint lines name only those; text it cannot parse would say otherwise.
            lines = (result.stdout + result.stderr).splitlines()
            assert result.returncode in (0, 3), result.stderr
            assert [line for line in lines if not line.startswith("mysql_global_variables_")] == []
            continue
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name


class _Reference(Collector):
    """The probe's families built with prometheus-client, as sqlprobe did before it wrote the text itself."""

    def __init__(self, result: ProbeResult) -> None:
        self._result = result

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(*QUERY_SUCCESS, labels=["metric"])
        duration = GaugeMetricFamily(*QUERY_DURATION, labels=["metric"])
        age = GaugeMetricFamily(*RESULT_AGE, labels=["metric"])
        for metric_result, query_result in self._result.metric_results():
            spec = metric_result.metric
            family = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
                spec.name, spec.documentation, labels=spec.label_names
            )
            stamps = metric_result.timestamps or (None,) * len(metric_result.samples)
            for (labels, number), stamp in zip(metric_result.samples, stamps, strict=True):
                family.add_metric(labels, number, timestamp=stamp)
            yield family
            ok = query_result.error is None and metric_result.error is None
            success.add_metric([spec.key], 1.0 if ok else 0.0)
            duration.add_metric([spec.key], query_result.duration)
            if query_result.query.min_interval is not None and query_result.error is None:
                age.add_metric([spec.key], self._result.at - query_result.ran_at)
        yield success
        yield duration
        if age.samples:
            yield age
        yield GaugeMetricFamily(*PROBE_SUCCESS, value=float(self._result.success))
        yield GaugeMetricFamily(*PROBE_DURATION, value=self._result.duration)


def test_probe_text_is_byte_for_byte_what_prometheus_client_writes(tmp_path: Path) -> None:
    odd = {
        "labels": {
            "query": "select 'say \"hi\"\\n\\\\' as name, 1 as n union all select 'é', 2.5e21 union all select '', 'nan'",
            "type": "counter",
            "description": 'help with "quotes", a \\ and\na new line',
            "labels": ["name"],
            "value": "n",
        },
        "empty": {
            "query": "select 1 as n where 0",
            "type": "gauge",
            "description": "no rows",
            "value": "n",
            "min_interval": "1m",
        },
        "broken": {"query": "select nope", "type": "gauge", "description": "fails", "value": "n"},
    }
    config = write_config(tmp_path, {"db": target("sqlite://", "odd")}, {"odd": odd})

    async def probe() -> ProbeResult:
        engines = EngineCache()
        prober = Prober(engines)
        try:
            return await prober.probe(config.targets["db"], None, 5.0)
        finally:
            prober.close()
            await engines.dispose_all()

    result = asyncio.run(probe())
    assert not result.success  # the failed metric is part of what is written
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reference(result))
    for accept, expected_type in ((None, TEXT.content_type), (OPENMETRICS_1, OPENMETRICS.content_type)):
        body, content_type = render_probe(result, accept)
        encoder, _ = choose_encoder(accept or "")
        assert (body.decode(), content_type) == (encoder(registry).decode(), expected_type)


@given(st.floats())
@example(999999.9999999999)
@example(1e6)
@example(-1e6)
@example(123456789.0)
@example(1234567.0)
@example(-0.0)
@example(5e-324)
def test_sample_values_are_written_as_prometheus_client_writes_them(number: float) -> None:
    assert _number(number) == floatToGoString(number)  # type: ignore[no-untyped-call]
