"""Turn a ProbeResult into exposition text (Prometheus text 0.0.4 or OpenMetrics) without a registry per probe."""

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from app.config import Metric
from app.probe.results import ProbeResult

# The probe's own families: (name, help). Every probe answers with them, after the user's metrics.
QUERY_SUCCESS = ("sqlprobe_query_success", "Whether the metric's query ran and its columns were found (1) or not (0).")
QUERY_DURATION = ("sqlprobe_query_duration_seconds", "Time the metric's query took, in seconds.")
RESULT_AGE = (
    "sqlprobe_query_result_age_seconds",
    "Seconds since the metric's query ran (metrics with min_interval: their result may be kept from an earlier probe).",
)
PROBE_SUCCESS = ("probe_success", "Whether the connection and every query succeeded (1) or not (0).")
PROBE_DURATION = ("probe_duration_seconds", "How long the probe took, in seconds.")


def render_probe(result: ProbeResult, accept: str | None) -> tuple[bytes, str]:
    """The probe's metrics in the format the scraper asked for (OpenMetrics, as Prometheus does, or text).

    Written directly rather than through prometheus-client's registry and families, which cost a tenth
    of a probe's CPU; tests/web/test_exposition_lint.py checks the output equals prometheus-client's, byte for byte.
    """
    content_type, openmetrics = negotiate(accept or "")
    parts: list[str] = []
    success: list[tuple[str, float]] = []
    duration: list[tuple[str, float]] = []
    age: list[tuple[str, float]] = []
    for metric_result, query_result in result.metric_results():
        metric = metric_result.metric
        for family in metric_result.families:
            parts.append(
                _family_header(
                    family.name if openmetrics else _sample_of(family.name, family.kind),
                    family.documentation,
                    family.kind,
                    openmetrics,
                )
            )
            sample_name = _sample_of(family.name, family.kind)
            parts.extend(
                f"{sample_name}{_labels(family.label_names, labels)} {_number(value)}\n"
                for labels, value in family.samples
            )
        if metric.name_from is None:
            parts.append(_header(metric, openmetrics))
        sample_name = _sample_name(metric)
        if metric_result.timestamps:
            for (labels, value), stamp in zip(metric_result.samples, metric_result.timestamps, strict=True):
                written = f"{sample_name}{_labels(metric.label_names, labels)} {_number(value)}"
                parts.append(f"{written}\n" if stamp is None else f"{written} {_timestamp(stamp, openmetrics)}\n")
        else:
            for labels, value in metric_result.samples:
                parts.append(f"{sample_name}{_labels(metric.label_names, labels)} {_number(value)}\n")
        ok = query_result.error is None and metric_result.error is None
        success.append((metric.key, 1.0 if ok else 0.0))
        duration.append((metric.key, query_result.duration))
        if query_result.query.min_interval is not None and query_result.error is None:
            age.append((metric.key, max(0.0, result.at - query_result.ran_at)))
    headers = _PROBE_HEADERS[openmetrics]
    for (name, _), samples in ((QUERY_SUCCESS, success), (QUERY_DURATION, duration), (RESULT_AGE, age)):
        if not samples and name == RESULT_AGE[0]:
            continue  # only for targets with min_interval
        parts.append(headers[name])
        parts.extend(f'{name}{{metric="{_escape_label(key)}"}} {_number(value)}\n' for key, value in samples)
    for (name, _), value in ((PROBE_SUCCESS, float(result.success)), (PROBE_DURATION, result.duration)):
        parts.append(headers[name])
        parts.append(f"{name} {_number(value)}\n")
    if openmetrics:
        parts.append("# EOF\n")
    return "".join(parts).encode(), content_type


def encode(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Exposition of ``registry`` (sqlprobe's own metrics) in the format the scraper asked for."""
    content_type, openmetrics = negotiate(accept or "")
    return (generate_openmetrics if openmetrics else generate_latest)(registry), content_type


class Format(NamedTuple):
    """A format sqlprobe writes: the Content-Type that names it exactly, and whether it is OpenMetrics."""

    content_type: str
    openmetrics: bool


TEXT = Format("text/plain; version=0.0.4; charset=utf-8", False)
OPENMETRICS = Format("application/openmetrics-text; version=1.0.0; charset=utf-8", True)
# Name escapings under which the names sqlprobe writes (all of them valid in the classic character set) are
# written as they are; "dots" and "values" would change them, so a range that asks for those is not served.
_UNCHANGED_BY = frozenset({"underscores", "allow-utf-8"})


@lru_cache(maxsize=64)
def negotiate(accept: str) -> Format:
    """The format to answer an Accept header with: the acceptable range of highest q (the first among equals).

    Only what sqlprobe writes counts: OpenMetrics 1.0.0 and text 0.0.4, with names that no requested escaping
    changes. Without an acceptable range, text 0.0.4, as every Prometheus client library falls back to.
    Once per header seen (Prometheus sends the same one on every scrape).
    """
    best, best_q = TEXT, -1.0
    for media_range in accept.split(","):
        kind, *parameter_texts = (part.strip() for part in media_range.split(";"))
        parameters = dict(_parameter(text) for text in parameter_texts)
        try:
            q = float(parameters.pop("q", "1"))
        except ValueError:
            continue
        served = _served(kind.lower(), parameters)
        if served is not None and 0 < q <= 1 and q > best_q:
            best, best_q = served, q
    return best


def _parameter(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name.strip().lower(), value.strip().strip('"')


def _served(kind: str, parameters: dict[str, str]) -> Format | None:
    if parameters.get("escaping", "underscores") not in _UNCHANGED_BY:
        return None
    version = parameters.get("version")
    if kind == "application/openmetrics-text" and version in (None, "1.0.0"):
        return OPENMETRICS
    if kind == "text/plain" and version in (None, "0.0.4"):
        return TEXT
    if kind in ("*/*", "text/*") and version is None:
        return TEXT
    return None


@lru_cache(maxsize=8192)
def _header(metric: Metric, openmetrics: bool) -> str:
    """HELP and TYPE lines of a user metric, made once per metric and format."""
    # The text format names a counter family by its sample (…_total); OpenMetrics by the family name.
    name = metric.name if openmetrics else _sample_name(metric)
    return _family_header(name, metric.documentation, metric.kind, openmetrics)


@lru_cache(maxsize=16384)
def _family_header(name: str, documentation: str, kind: str, openmetrics: bool) -> str:
    help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        help_text = help_text.replace('"', r"\"")
        kind = "unknown" if kind == "untyped" else kind  # OpenMetrics' name for it
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def _sample_name(metric: Metric) -> str:
    return _sample_of(metric.name, metric.kind)


def _sample_of(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def _labels(names: Sequence[str], values: Iterable[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in zip(names, values, strict=True)) + "}"


def _number(value: float) -> str:
    """A sample value as prometheus-client writes it: Go's formatting, +Inf, -Inf and NaN."""
    # floatToGoString is repr() but for these: infinities, NaN (never inside the bounds) and exponents from 1e6.
    return repr(value) if type(value) is float and _MINUS_INF < value < _GO_EXPONENT else _go_string(value)


def _timestamp(seconds: float, openmetrics: bool) -> str:
    """A sample's timestamp as prometheus-client writes it: seconds in OpenMetrics, milliseconds in the text format."""
    return str(seconds) if openmetrics else f"{int(seconds * 1000):d}"


_go_string: Callable[[float], str] = floatToGoString

_MINUS_INF = float("-inf")
_GO_EXPONENT = 1e6


def _escape_label(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:  # seldom: names and label values are mostly plain
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


# The HELP and TYPE lines of the probe's own families, by format (False: text, True: OpenMetrics) and name.
_PROBE_HEADERS = {
    openmetrics: {
        name: _family_header(name, documentation, "gauge", openmetrics)
        for name, documentation in (QUERY_SUCCESS, QUERY_DURATION, RESULT_AGE, PROBE_SUCCESS, PROBE_DURATION)
    }
    for openmetrics in (False, True)
}
