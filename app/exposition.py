"""Turn a ProbeResult into Prometheus exposition text, through a fresh registry per probe."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.prober import ProbeResult


class ProbeCollector(Collector):
    """Yields the user's metric families and the probe's own status families."""

    def __init__(self, result: ProbeResult) -> None:
        self._result = result

    def collect(self) -> Iterator[Metric]:
        """The families of one probe, user metrics first."""
        success = GaugeMetricFamily(
            "sqlprobe_query_success",
            "Whether the metric's query ran and its columns were found (1) or not (0).",
            labels=["metric"],
        )
        duration = GaugeMetricFamily(
            "sqlprobe_query_duration_seconds", "Time the metric's query took, in seconds.", labels=["metric"]
        )
        for metric_result, query_result in self._result.metric_results():
            metric = metric_result.metric
            family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            family = family_type(metric.name, metric.documentation, labels=metric.labels)
            for labels, value in metric_result.samples:
                family.add_metric(labels, value)
            yield family
            success.add_metric([metric.key], 1.0 if query_result.error is None and metric_result.error is None else 0.0)
            duration.add_metric([metric.key], query_result.duration)
        yield success
        yield duration
        yield GaugeMetricFamily(
            "probe_success",
            "Whether the connection and every query succeeded (1) or not (0).",
            value=float(self._result.success),
        )
        yield GaugeMetricFamily(
            "probe_duration_seconds", "How long the probe took, in seconds.", value=self._result.duration
        )


def probe_registry(result: ProbeResult) -> CollectorRegistry:
    """A registry of its own for one probe: nothing of it reaches the global one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(result))
    return registry


def encode(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Exposition of ``registry`` in the format the scraper asked for (text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
