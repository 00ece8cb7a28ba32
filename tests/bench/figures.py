"""The figures of one measured window: throughput, latency, failures and CPU per query."""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tests.bench.client import Outcome
from tests.bench.fleet import QUERIES_PER_PROBE


def summarize(outcomes: Sequence[Outcome], window: Mapping[str, float]) -> dict[str, Any]:
    """The figures of one measured window: throughput, latency, failures and CPU per query."""
    probes = len(outcomes)
    queries = probes * QUERIES_PER_PROBE
    latencies = [outcome.latency for outcome in outcomes]
    failures = Counter(outcome.failure for outcome in outcomes if outcome.failure is not None)
    others = window["machine_cpu_s"] - window["exporter_cpu_s"] - window["db_cpu_s"] - window["generator_cpu_s"]
    return {
        "probes": probes,
        "queries": queries,
        "probes_per_s": probes / window["wall_s"],
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_max_ms": max(latencies, default=0) * 1000,
        "failed_probes": sum(failures.values()),
        "failures": dict(failures),
        **window,
        "exporter_cpu_s_per_1000_queries": per(window["exporter_cpu_s"] * 1000, queries),
        "exporter_cpu_us_per_query": per(window["exporter_cpu_s"] * 1e6, queries),
        "exporter_cores": window["exporter_cpu_s"] / window["wall_s"],
        "db_cpu_s_per_1000_queries": per(window["db_cpu_s"] * 1000, queries),
        "db_cpu_us_per_query": per(window["db_cpu_s"] * 1e6, queries),
        "generator_cpu_us_per_probe": per(window["generator_cpu_s"] * 1e6, probes),
        "generator_cores": window["generator_cpu_s"] / window["wall_s"],
        "other_processes_cores": others / window["wall_s"],
    }


def per(amount: float, count: int) -> float:
    """``amount`` per one of ``count`` (NaN for none)."""
    return amount / count if count else math.nan


def percentile(values: Sequence[float], rank: float) -> float:
    """The nearest-rank percentile of ``values`` (0 when there are none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]
