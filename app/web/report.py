"""The ``debug=true`` page: a plain-text account of one probe for the person reading it."""

import time
from typing import NamedTuple

from app.config import Metric
from app.errors import ConnectFailed
from app.probe.history import Probe, TargetState
from app.probe.results import ProbeResult
from app.web.exposition import render_probe


class Failure(NamedTuple):
    """One way a probe failed: the reason, the error's message on one line, and the metrics it cost."""

    reason: str
    message: str
    metrics: tuple[str, ...]


def failures(result: ProbeResult) -> list[Failure]:
    """The probe's failures, one per distinct reason and message, in the order the metrics ran."""
    by_error: dict[tuple[str, str], list[str]] = {}
    for metric, _ in result.metric_results():
        if metric.error is not None:
            # One line per failure: drivers' messages may span several (psycopg adds hints).
            message = " ".join(str(metric.error).split())
            by_error.setdefault((metric.error.reason, message), []).append(metric.metric.key)
    return [Failure(reason, message, tuple(keys)) for (reason, message), keys in by_error.items()]


def debug_report(result: ProbeResult, exposition: str, ended: float | None = None) -> str:
    """Target, each SQL with rows, duration and error, then the metrics as Prometheus sees them.

    ``ended`` (time.monotonic()) is when the probe ended, for a report rendered later; ages are told as of then.
    """
    now = time.monotonic() if ended is None else ended
    target = result.target
    lines = [
        f"target: {target.name}",
        *([] if target.module is None else [f"module: {target.module}"]),
        f"dsn: {target.display_dsn}",
        f"query sets: {', '.join(_probed_sets(result))}",
        f"deadline: {result.budget:.3f}s",
        f"probe_success: {int(result.success)} in {result.duration:.3f}s",
    ]
    connect_error = _shared_connect_error(result)
    if connect_error is not None:
        lines.append(f"connection failed ({connect_error.reason}): {connect_error}")
    lines.append("")
    for number, query in enumerate(result.queries, start=1):
        lines.append(f"query {number}: metrics {', '.join(metric.key for metric in query.query.metrics)}")
        lines.extend(f"    {line}" for line in query.query.sql.splitlines())
        if query.query.parameters:
            lines.append(f"  run once per parameter set ({len(query.query.parameters)}), rows are the union:")
            lines.extend(
                "    " + ", ".join(f":{name}={value!r}" for name, value in parameter_set)
                for parameter_set in query.query.parameters
            )
        rows = "-" if query.rows is None else str(query.rows)
        if query.rows is not None and query.rows >= query.query.row_limit:
            rows += " (the result was cut there, past max_rows: the rest was never read)"
        lines.append(f"  rows: {rows}  duration: {query.duration:.4f}s")
        if query.from_cache:
            age = now - query.ran_at
            lines.append(f"  not run: the result of {age:.1f}s ago (min_interval {query.query.min_interval:g}s)")
        if connect_error is not None:
            lines.append("  not run: no connection")
        elif query.error is not None:
            lines.append(f"  error ({query.error.reason}): {query.error}")
        for metric in query.metrics:
            status = f"{metric.sample_count} samples"
            if metric.skipped:
                status += ", skipped rows: " + ", ".join(
                    f"{reason}={count}" for reason, count in metric.skipped.items()
                )
            if metric.error is not None and metric.error is not query.error:
                status = f"failed ({metric.error.reason}): {metric.error}"
            lines.append(f"  metric {metric.metric.name}{_shape(metric.metric)}: {status}")
        lines.append("")
    lines += ["metrics:", exposition]
    return "\n".join(lines)


def _shared_connect_error(result: ProbeResult) -> ConnectFailed | None:
    """The connection error every query failed with, if the probe never got a connection."""
    errors = {id(query.error): query.error for query in result.queries}
    if len(errors) == 1:
        (error,) = errors.values()
        if isinstance(error, ConnectFailed):
            return error
    return None


def _probed_sets(result: ProbeResult) -> list[str]:
    """The target's query sets this probe ran (all, unless the request named some)."""
    probed = {metric.metric.query_set for metric, _ in result.metric_results()}
    return [name for name in result.target.query_sets if name in probed]


def probe_log(state: TargetState, last_failed: Probe | None) -> str:
    """/logs: the debug account of a target's last probe of each selection of query sets, the most recent first,
    and of its last failed probe if none of those failed."""
    now = time.time()
    latest = sorted(state.latest.values(), key=lambda probe: probe.ended_at, reverse=True)
    parts = [_logged("last probe", probe, now) for probe in latest]
    if state.ok and last_failed is not None:
        parts.append(_logged("last failed probe", last_failed, now))
    return "\n\n".join(parts)


def _logged(title: str, probe: Probe, now: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(probe.ended_at))
    outcome = "succeeded" if probe.success else "failed"
    exposition = render_probe(probe.result, None)[0].decode()
    sets = "" if probe.selection is None else f" (query sets {', '.join(sorted(probe.selection))})"
    heading = f"# {title} of {probe.key}{sets}: {outcome}, ended {when} ({now - probe.ended_at:.0f}s ago)"
    return f"{heading}\n{debug_report(probe.result, exposition, probe.ended_monotonic)}"


def _shape(metric: Metric) -> str:
    """How a metric reads its rows, when it is more than one value column and labels."""
    parts = []
    if metric.value_label is not None:
        parts.append(f"values {', '.join(metric.values)} labelled {metric.value_label}")
    if metric.static_value is not None:
        parts.append(f"static value {metric.static_value:g}")
    if metric.static_labels:
        parts.append("static labels " + ", ".join(f"{name}={value!r}" for name, value in metric.static_labels))
    if metric.timestamp is not None:
        parts.append(f"timestamps from {metric.timestamp}")
    return f" ({'; '.join(parts)})" if parts else ""
