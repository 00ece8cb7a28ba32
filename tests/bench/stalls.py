"""sqlprobe's pauses within the measured window, from its own /metrics: event-loop stalls and full collections."""

import math
import sys
import time
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from tests.bench.fleet import Exporter

Samples = Mapping[tuple[str, str, str], float]


def own_metrics(running: Exporter) -> tuple[Samples, float]:
    """sqlprobe's pause figures from its own /metrics, each sample by (name, le, generation), and the seconds the
    answer took; no samples (said on stderr) when it did not answer within a minute."""
    samples: dict[tuple[str, str, str], float] = {}
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{running.host}:{running.port}/metrics", timeout=60) as answer:
            text = answer.read().decode()
    except (OSError, TimeoutError) as error:
        print(f"bench: sqlprobe's /metrics did not answer: {error!r}", file=sys.stderr)
        return samples, time.monotonic() - start
    took = time.monotonic() - start
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("sqlprobe_event_loop_lag", "sqlprobe_gc_pause")):
            for sample in family.samples:
                labels = sample.labels
                samples[sample.name, labels.get("le", ""), labels.get("generation", "")] = float(sample.value)
    return samples, took


def pauses_within(before: Samples, after: Samples) -> dict[str, float]:
    """The event loop's stalls and the full collections within the window, from sqlprobe's histograms.

    A histogram knows a pause to within its bucket: the longest is given as the least bucket bound that holds every
    pause of the window (0 when there was none).
    """

    def within(name: str, le: str, generation: str = "") -> float:
        return after.get((name, le, generation), 0.0) - before.get((name, le, generation), 0.0)

    def longest(name: str, generation: str = "") -> float:
        counts = sorted(
            (float(le), within(name, le, generation)) for (n, le, of) in after if (n, of) == (name, generation)
        )
        total = counts[-1][1] if counts else 0.0
        return next((bound for bound, count in counts if count >= total), 0.0) if total else 0.0

    lag, gc = "sqlprobe_event_loop_lag_seconds_bucket", "sqlprobe_gc_pause_seconds_bucket"
    if not before or not after:  # /metrics did not answer at one end of the window
        keys = ("loop_lag_window_max_bucket_ms", "loop_lags_over_50ms", "gc_full_collections")
        return dict.fromkeys((*keys, "gc_pause_window_max_bucket_ms"), math.nan)
    return {
        "loop_lag_window_max_bucket_ms": longest(lag) * 1000,
        "loop_lags_over_50ms": within(lag, "+Inf") - within(lag, "0.05"),
        "gc_full_collections": within("sqlprobe_gc_pause_seconds_count", "", "2"),
        "gc_pause_window_max_bucket_ms": longest(gc, "2") * 1000,
    }
