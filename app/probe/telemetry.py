"""The exporter's own metrics, served on /metrics from a registry that belongs to one app."""

import contextlib
import platform
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from app import __version__
from app.probe.results import ProbeResult

PROBE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Telemetry:
    """Counts probes, their durations and per-metric errors."""

    def __init__(
        self,
        engine_count: Callable[[], int],
        kills_skipped: Callable[[], Mapping[str, int]],
        credential_fetches: Callable[[], Mapping[tuple[str, str], Mapping[str, int]]] = dict,
        credential_ages: Callable[[], Mapping[tuple[str, str], float]] = dict,
    ) -> None:
        # *_created series double the exporter's series count and tell Prometheus nothing it needs here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build = Gauge(
            "sqlprobe_build_info",
            "sqlprobe's version, always 1.",
            ["version", "python_version"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        engines = Gauge("sqlprobe_engines", "SQLAlchemy engines cached, one per probed target.", registry=self.registry)
        engines.set_function(lambda: float(engine_count()))
        self.registry.register(_KillsSkipped(kills_skipped))
        self.registry.register(_Credentials(credential_fetches, credential_ages))
        self._probes = Counter(
            "sqlprobe_probes", "Probes by target and result.", ["target", "result"], registry=self.registry
        )
        # The counter of each target and result, looked up once: labels() validates and locks on every call.
        self._probe_counters: dict[tuple[str, bool], Counter] = {}
        self._duration = Histogram(
            "sqlprobe_probe_duration_seconds",
            "Probe durations, in seconds.",
            buckets=PROBE_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._reload_successful = Gauge(
            "sqlprobe_config_last_reload_successful",
            "Whether the last reload of the config succeeded (1) or the previous config still serves (0).",
            registry=self.registry,
        )
        self._reload_timestamp = Gauge(
            "sqlprobe_config_last_reload_success_timestamp_seconds",
            "When the config now served was loaded, in seconds since the epoch.",
            registry=self.registry,
        )
        self.config_loaded(changed=True)
        self._query_errors = Counter(
            "sqlprobe_query_errors",
            "Metric failures and skipped rows, by target, metric and reason.",
            ["target", "metric", "reason"],
            registry=self.registry,
        )

        # The (metric, reason) pairs each target has query-error series for, so a target let go loses them all.
        self._error_series: dict[str, set[tuple[str, str]]] = {}
        self._inventory_file_ok = Gauge(
            "sqlprobe_inventory_file_ok",
            "Whether an inventory file parsed at the last refresh (1) or keeps its last good contents (0).",
            ["file"],
            registry=self.registry,
        )
        self._inventory_files: set[str] = set()

    def inventory_files(self, states: Mapping[str, bool]) -> None:
        """The inventory files matched at the last refresh and whether each parsed; series of others go."""
        for file in self._inventory_files - states.keys():
            self._inventory_file_ok.remove(file)
        for file, ok in states.items():
            self._inventory_file_ok.labels(file).set(1 if ok else 0)
        self._inventory_files = set(states)

    def forget_targets(self, names: list[str]) -> None:
        """Remove every per-target series of the targets named (module targets let go): /metrics stays bounded."""
        for name in names:
            for success in (True, False):
                if self._probe_counters.pop((name, success), None) is not None:
                    with contextlib.suppress(KeyError):  # a reload's thread and the event loop may both get here
                        self._probes.remove(name, "success" if success else "failure")
            for metric, reason in self._error_series.pop(name, ()):
                with contextlib.suppress(KeyError):
                    self._query_errors.remove(name, metric, reason)

    def config_loaded(self, *, changed: bool) -> None:
        """A config was loaded (at start or by a reload); a reload that found nothing new keeps the timestamp."""
        self._reload_successful.set(1)
        if changed:
            self._reload_timestamp.set_to_current_time()

    def config_rejected(self) -> None:
        """A reload failed: the previous config keeps serving."""
        self._reload_successful.set(0)

    def observe(self, result: ProbeResult) -> None:
        """Account for one finished probe."""
        target = result.target.name
        counter = self._probe_counters.get((target, result.success))
        if counter is None:
            label = "success" if result.success else "failure"
            counter = self._probe_counters[target, result.success] = self._probes.labels(target, label)
        counter.inc()
        self._duration.observe(result.duration)
        for metric_result, _ in result.metric_results():
            key = metric_result.metric.key
            if metric_result.error is not None:
                self._query_error(target, key, metric_result.error.reason).inc()
            for reason, count in metric_result.skipped.items():
                self._query_error(target, key, reason).inc(count)

    def _query_error(self, target: str, metric: str, reason: str) -> Counter:
        self._error_series.setdefault(target, set()).add((metric, reason))
        return self._query_errors.labels(target, metric, reason)


class _KillsSkipped(Collector):
    """sqlprobe_kill_skipped_total{reason}: kills not sent, read from the engines' Killer when scraped."""

    def __init__(self, skipped: Callable[[], Mapping[str, int]]) -> None:
        self._skipped = skipped

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "sqlprobe_kill_skipped",
            "KILL QUERY not sent, by reason: the kill connection reached another server (other_server), the "
            "server would not say who it is (identity_unknown), too many waiting (queue_full) or too late (too_late).",
            labels=["reason"],
        )
        for reason, count in sorted(self._skipped().items()):
            family.add_metric([reason], count)
        yield family


class _Credentials(Collector):
    """sqlprobe_credentials_fetch_total{target,module,result} and sqlprobe_credentials_age_seconds{target,module}:
    runs of credentials commands, and how old the credentials in use are (a module's oldest), read when scraped."""

    def __init__(
        self,
        fetches: Callable[[], Mapping[tuple[str, str], Mapping[str, int]]],
        ages: Callable[[], Mapping[tuple[str, str], float]],
    ) -> None:
        self._fetches = fetches
        self._ages = ages

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        fetches = CounterMetricFamily(
            "sqlprobe_credentials_fetch",
            "Runs of a target's or module's credentials_command, by result: success, failed (a non-zero exit "
            "status), timeout (killed at the probe's deadline), invalid_output.",
            labels=["target", "module", "result"],
        )
        for (target, module), results in sorted(self._fetches().items()):
            for result, count in sorted(results.items()):
                fetches.add_metric([target, module, result], count)
        yield fetches
        ages = GaugeMetricFamily(
            "sqlprobe_credentials_age_seconds",
            "Seconds since the credentials in use were fetched by the credentials_command (a module's oldest).",
            labels=["target", "module"],
        )
        for (target, module), age in sorted(self._ages().items()):
            ages.add_metric([target, module], age)
        yield ages
