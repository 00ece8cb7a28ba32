"""Rows to samples: a metric's values, labels and timestamps read from the rows its query returned."""

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from app.config import Metric
from app.errors import ColumnAmbiguous, ColumnMissing, ProbeError
from app.probe.families import family_result, label_text, mysqld_exporter_number
from app.probe.results import LabelValues, MetricResult


def metric_result(metric: Metric, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> MetricResult:
    number = _number if metric.numbers == "sql" else _mysqld_exporter_number
    if metric.name_from is not None:
        named = (*metric.values, metric.name_from)
        values_at, label_at, _, unusable = _positions(named, metric.labels, None, columns)
        if unusable is not None:
            return MetricResult(metric, error=unusable)
        return family_result(metric, rows, values_at[0], values_at[1], label_at, number)
    values_at, label_at, timestamp_at, unusable = _positions(metric.values, metric.labels, metric.timestamp, columns)
    if unusable is not None:
        return MetricResult(metric, error=unusable)
    samples: dict[LabelValues, float] = {}
    skipped: dict[str, int] = {}
    static = tuple(value for _, value in metric.static_labels)
    if len(values_at) == 1 and metric.value_label is None and timestamp_at is None:
        # The common shape, one value column per row, kept on its own short path: it runs for most rows probed.
        value_at = values_at[0]
        for row in rows:
            reason = (
                _add_sample(samples, row, value_at, label_at, static, metric.max_label_length, number)
                if len(samples) < metric.max_rows
                else "max_rows"
            )
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
        return MetricResult(metric, tuple(samples.items()), skipped)
    timestamps: list[float | None] = []
    for row in rows:
        for reason in _add_row_samples(
            samples, timestamps, row, metric, values_at, label_at, timestamp_at, static, number
        ):
            skipped[reason] = skipped.get(reason, 0) + 1
    return MetricResult(
        metric, tuple(samples.items()), skipped, timestamps=tuple(timestamps) if timestamp_at is not None else ()
    )


@lru_cache(maxsize=4096)
def _positions(
    values: tuple[str, ...], labels: tuple[str, ...], timestamp: str | None, columns: tuple[str, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], int | None, ProbeError | None]:
    """Where a metric's values, labels and timestamp are in a result with ``columns`` (case-insensitive), or why
    they are not (a column missing, or two whose names differ only in case).

    Worked out once per metric and result shape: a query returns the same columns on every probe.
    """
    positions: dict[str, int] = {}
    twins: dict[str, int] = {}  # a name that a second column also answers to, ignoring case: that column
    for index, column in enumerate(columns):
        if positions.setdefault(column.lower(), index) != index:
            twins.setdefault(column.lower(), index)
    wanted = [("value", name) for name in values] + [("label", name) for name in labels]
    if timestamp is not None:
        wanted.append(("timestamp", timestamp))
    found: list[int] = []
    for role, name in wanted:
        position = positions.get(name.lower())
        if position is None:
            return (), (), None, ColumnMissing(role, name, columns)
        if name.lower() in twins:
            return (), (), None, ColumnAmbiguous(role, name, columns[position], columns[twins[name.lower()]])
        found.append(position)
    timestamp_at = found.pop() if timestamp is not None else None
    return tuple(found[: len(values)]), tuple(found[len(values) :]), timestamp_at, None


def _add_sample(
    samples: dict[LabelValues, float],
    row: Sequence[Any],
    value_at: int,
    label_at: tuple[int, ...],
    static: LabelValues,
    max_label_length: int,
    number: Callable[[object], float | str],
) -> str | None:
    """Add ``row``'s sample; the reason it was skipped, if it was."""
    raw = row[value_at]
    # Most cells are numbers already: they need no more than float().
    value = float(raw) if type(raw) in _NUMBER_TYPES else number(raw)
    if isinstance(value, str):
        return value
    labels = tuple([label_text(row[position]) for position in label_at]) if label_at else ()
    if labels and max(map(len, labels)) > max_label_length:
        return "label_too_long"
    if static:
        labels += static
    if labels in samples:
        return "duplicate_labels"
    samples[labels] = value
    return None


def _add_row_samples(
    samples: dict[LabelValues, float],
    timestamps: list[float | None],
    row: Sequence[Any],
    metric: Metric,
    values_at: tuple[int, ...],
    label_at: tuple[int, ...],
    timestamp_at: int | None,
    static: LabelValues,
    number: Callable[[object], float | str],
) -> list[str]:
    """Add ``row``'s samples (one per value column, or one of the static value); the reasons of those skipped."""
    stamp = None if timestamp_at is None else _timestamp(row[timestamp_at])
    if isinstance(stamp, str):
        return [stamp]
    labels = tuple([label_text(row[position]) for position in label_at])
    if labels and max(map(len, labels)) > metric.max_label_length:
        return ["label_too_long"]
    # (value label, value or reason) per sample this row gives.
    cells: list[tuple[LabelValues, float | str]] = (
        [((), metric.static_value)]
        if metric.static_value is not None
        else [
            ((() if metric.value_label is None else (column,)), number(row[position]))
            for column, position in zip(metric.values, values_at, strict=True)
        ]
    )
    reasons = []
    for value_label, value in cells:
        key = labels + value_label + static
        if len(samples) >= metric.max_rows:
            reasons.append("max_rows")
        elif isinstance(value, str):
            reasons.append(value)
        elif key in samples:
            reasons.append("duplicate_labels")
        else:
            samples[key] = value
            timestamps.append(stamp)
    return reasons


def _timestamp(raw: object) -> float | str | None:
    """A sample's time in Unix seconds from a DATETIME/TIMESTAMP or a number; None if NULL; else the skip reason."""
    if raw is None:
        return None
    if isinstance(raw, datetime):
        # DATETIME has no time zone: taken as UTC (as sql_exporter's Go driver does by default).
        return (raw if raw.tzinfo is not None else raw.replace(tzinfo=UTC)).timestamp()
    if isinstance(raw, date):  # a DATE: its midnight, UTC
        return datetime.combine(raw, datetime.min.time(), UTC).timestamp()
    seconds = _number(raw)
    if isinstance(seconds, str) or not abs(seconds) < _LATEST_SECONDS or isinstance(raw, timedelta):
        return "invalid_timestamp"  # also NaN, and times whose milliseconds the text format's int64 cannot hold
    return seconds


# Seconds the text format can write: its timestamps are int64 milliseconds (Prometheus rejects the whole scrape
# for one past them).
_LATEST_SECONDS = 2.0**63 / 1000

_NUMBER_TYPES = frozenset({int, float, Decimal})


def _number(raw: object) -> float | str:
    """The sample value of a cell, or the reason it has none."""
    if raw is None:
        return "null_value"
    if isinstance(raw, int | float | Decimal):
        return float(raw)
    if isinstance(raw, timedelta):  # MySQL TIME columns, e.g. the age of the oldest query
        return raw.total_seconds()
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return "non_numeric_value"
    return "non_numeric_value"


def _mysqld_exporter_number(raw: object) -> float | str:
    return mysqld_exporter_number(raw, _number)
