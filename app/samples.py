"""Rows to samples: a metric's value and labels read from the rows its query returned."""

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from app.config import Metric
from app.errors import ColumnMissing
from app.results import LabelValues, MetricResult


def metric_result(metric: Metric, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> MetricResult:
    value_at, label_at, missing = _positions(metric.value, metric.labels, columns)
    if missing is not None:
        return MetricResult(metric, error=ColumnMissing(*missing, columns))
    samples: dict[LabelValues, float] = {}
    skipped: dict[str, int] = {}
    for row in rows:
        reason = _add_sample(samples, row, value_at, label_at) if len(samples) < metric.max_rows else "max_rows"
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
    return MetricResult(metric, tuple(samples.items()), skipped)


@lru_cache(maxsize=4096)
def _positions(
    value: str, labels: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[int, tuple[int, ...], tuple[str, str] | None]:
    """Where a metric's value and labels are in a result with ``columns`` (case-insensitive), or which is missing.

    Worked out once per metric and result shape: a query returns the same columns on every probe.
    """
    positions = {name.lower(): index for index, name in enumerate(columns)}
    value_at = positions.get(value.lower())
    if value_at is None:
        return -1, (), ("value", value)
    label_at = []
    for label in labels:
        position = positions.get(label.lower())
        if position is None:
            return -1, (), ("label", label)
        label_at.append(position)
    return value_at, tuple(label_at), None


def _add_sample(
    samples: dict[LabelValues, float], row: Sequence[Any], value_at: int, label_at: tuple[int, ...]
) -> str | None:
    """Add ``row``'s sample; the reason it was skipped, if it was."""
    raw = row[value_at]
    # Most cells are numbers already: they need no more than float().
    value = float(raw) if type(raw) in _NUMBER_TYPES else _number(raw)
    if isinstance(value, str):
        return value
    labels = tuple([_label(row[position]) for position in label_at]) if label_at else ()
    if labels in samples:
        return "duplicate_labels"
    samples[labels] = value
    return None


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


def _label(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray):
        return raw.decode("utf-8", "replace")
    return str(raw)
