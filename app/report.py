"""The ``debug=true`` page: a plain-text account of one probe for the person reading it."""

import time

from app.config import Metric
from app.errors import ConnectFailed
from app.results import ProbeResult


def debug_report(result: ProbeResult, exposition: str) -> str:
    """Target, each SQL with rows, duration and error, then the metrics as Prometheus sees them."""
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
        lines.append(f"  rows: {rows}  duration: {query.duration:.4f}s")
        if query.from_cache:
            age = time.monotonic() - query.ran_at
            lines.append(f"  not run: the result of {age:.1f}s ago (min_interval {query.query.min_interval:g}s)")
        if connect_error is not None:
            lines.append("  not run: no connection")
        elif query.error is not None:
            lines.append(f"  error ({query.error.reason}): {query.error}")
        for metric in query.metrics:
            status = f"{len(metric.samples)} samples"
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
