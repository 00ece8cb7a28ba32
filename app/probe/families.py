"""Rows to families: a ``name_from`` metric's families named from a column, and mysqld_exporter's numbers."""

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from app.config import Metric
from app.config.model import FamilyRule
from app.probe.results import Family, LabelValues, MetricResult

# mysqld_exporter's validPrometheusName: every character but a-z, A-Z, 0-9 and _ becomes _, then lower case.
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_]")

# Characters a row's name (its text in the name_from column) may have: a longer one is skipped (name_too_long), not
# cut short (two long names would become one family). MySQL's own names (variables, tables, users) have at most 64.
MAX_ROW_NAME_LENGTH = 200

# Where a row goes: (family name, kind, help, label names it adds, their values), or None to drop it.
_Destination = tuple[str, str, str, tuple[str, ...], LabelValues] | None


def family_result(
    metric: Metric,
    rows: Sequence[Sequence[Any]],
    value_at: int,
    name_at: int,
    label_at: tuple[int, ...],
    number: Any,
) -> MetricResult:
    """The families ``metric`` makes of ``rows``: one per row name, or per rule of ``families`` that it matches."""
    families: dict[str, tuple[str, str, tuple[str, ...], dict[LabelValues, float]]] = {}
    taken: dict[str, str] = {}  # every sample name written so far, by the family that writes it
    skipped: dict[str, int] = {}
    static = tuple(value for _, value in metric.static_labels)
    static_names = tuple(name for name, _ in metric.static_labels)
    count = 0
    for row in rows:
        text = label_text(row[name_at])  # NULL: ""
        # Before the cache and any pattern: a long name is neither kept nor matched.
        reason = "empty_name" if not text else "name_too_long" if len(text) > MAX_ROW_NAME_LENGTH else None
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        destination = _destination(metric.name, metric.kind, metric.documentation, metric.families, text)
        if destination is None:
            continue
        value = number(row[value_at])
        name, kind, documentation, group_names, group_values = destination
        labels = tuple(label_text(row[position]) for position in label_at) + group_values + static
        if count >= metric.max_rows:
            reason = "max_rows"
        elif isinstance(value, str):
            reason = value
        elif labels and max(map(len, labels)) > metric.max_label_length:
            reason = "label_too_long"
        elif name not in families and any(taken.get(sample) not in (None, name) for sample in _samples(name, kind)):
            reason = "name_clash"
        else:
            label_names = (*metric.labels, *group_names, *static_names)
            family = families.setdefault(name, (kind, documentation, label_names, {}))
            for sample in _samples(name, kind):
                taken[sample] = name
            if family[2] != label_names or labels in family[3]:
                reason = "duplicate_labels"
            else:
                family[3][labels] = value
                count += 1
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
    made = tuple(
        Family(name, kind, documentation, label_names, tuple(samples.items()))
        for name, (kind, documentation, label_names, samples) in families.items()
        if samples
    )
    return MetricResult(metric, (), skipped, families=made)


def _samples(name: str, kind: str) -> tuple[str, ...]:
    """The names a family of ``kind`` reserves in OpenMetrics: a counter's _total and _created, though sqlprobe
    writes no _created (a family named ``…_created`` beside a counter makes the exposition unparseable)."""
    return (name, f"{name}_total", f"{name}_created") if kind == "counter" else (name,)


@lru_cache(maxsize=16384)
def _destination(name: str, kind: str, documentation: str, rules: tuple[FamilyRule, ...], text: str) -> _Destination:
    """Where a row named ``text`` goes (once per metric and row name: the same names come back every probe).

    Keyed on the text, not the cell: 1 == 1.0 == True in Python, and a cache keyed on the cell named rows after
    whichever of them came first in the process."""
    row_name = _NOT_IN_NAMES.sub("_", text).lower()
    for rule in rules:
        values = rule.pattern.fullmatch(row_name)
        if values is not None:
            if rule.name is None:
                return None
            return rule.name, rule.kind, rule.documentation, rule.label_names, values
    return f"{name}_{row_name}", kind, documentation, (), ()


def label_text(raw: object) -> str:
    """A cell as a label value: NULL as "", bytes decoded (undecodable bytes replaced)."""
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray):
        return raw.decode("utf-8", "replace")
    return str(raw)


# mysqld_exporter's parseStatus: these words are numbers, then two forms of date, then Go's ParseFloat.
_WORDS = {
    "yes": 1.0,
    "on": 1.0,
    "no": 0.0,
    "off": 0.0,
    "disabled": 0.0,
    "connecting": 0.0,
    "primary": 1.0,
    "non-primary": 0.0,
    "disconnected": 0.0,
}
# Go's strconv.ParseFloat: decimal or hexadecimal, with exponent, inf/infinity/nan; no spaces, no underscores
# (it takes them only in base-prefixed literals, which mysqld_exporter never sees).
# ASCII digits only (re.ASCII): Python's \d and float() also take full-width and Arabic-Indic digits, Go's do not.
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])",
    re.ASCII,
)


def mysqld_exporter_number(raw: object, plain: Any) -> float | str:
    """A cell's value as mysqld_exporter reads it (``plain`` reads cells that are not text)."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        result: float | str = plain(raw)
        return result
    word = _WORDS.get(raw.lower())
    if word is not None:
        return word
    for form in ("%b %d %H:%M:%S %Y %Z", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(raw, form).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    if _GO_FLOAT.fullmatch(raw) is None:
        return "non_numeric_value"
    try:
        number = float.fromhex(raw) if "x" in raw.lower() else float(raw)
    except (ValueError, OverflowError):
        return "non_numeric_value"
    # Go's ParseFloat says ErrRange (mysqld_exporter drops the row) where float() rounds past the largest float64 to
    # infinity: only "inf" and "infinity" are infinite. Below the smallest, both give 0 (Go without an error).
    if math.isinf(number) and "n" not in raw.lower():
        return "non_numeric_value"
    return number
