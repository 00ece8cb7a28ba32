"""Query parameters: the two ways queries.yml writes them, and binding them through the driver."""

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache, reduce
from itertools import product
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError

Scalar = str | int | float | bool | None
# One run's parameters, as (name, value) pairs: hashable, so metrics with the same SQL and parameters share runs.
ParameterSet = tuple[tuple[str, Scalar], ...]
ParameterSets = tuple[ParameterSet, ...]

# Runs of one query per probe, at most: each is a statement on the target within the probe's deadline.
MAX_PARAMETER_SETS = 1000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_parameters(raw: object) -> ParameterSets:
    """A list of mappings, or query-exporter's matrix (named lists, every combination), as parameter sets."""
    if isinstance(raw, list):
        sets = [_parameter_set(item, f"set {index + 1}") for index, item in enumerate(raw)]
    elif isinstance(raw, dict):
        sets = _matrix(raw)
    else:
        raise ValueError("expected a list of mappings, or a mapping of lists of mappings")
    if not sets:
        raise ValueError("is empty")
    if len(sets) > MAX_PARAMETER_SETS:
        raise ValueError(f"{len(sets)} sets, more than the {MAX_PARAMETER_SETS} runs a probe may make")
    names = [tuple(sorted(name for name, _ in parameter_set)) for parameter_set in sets]
    for index, these in enumerate(names):
        if these != names[0]:
            raise ValueError(
                f"every set must name the same parameters ({', '.join(names[0])}), "
                f"set {index + 1} names {', '.join(these) or 'none'}"
            )
    return tuple(sets)


def _matrix(raw: Mapping[object, object]) -> list[ParameterSet]:
    """query-exporter's form: {a: [{x: 1}], b: [{y: 2}, {y: 3}]} runs for every combination, as a__x, b__y."""
    combinations = math.prod(len(items) if isinstance(items, list) else 1 for items in raw.values())
    if combinations > MAX_PARAMETER_SETS:
        # Counted before they are made: a few short lists multiply into millions.
        raise ValueError(f"{combinations} combinations, more than the {MAX_PARAMETER_SETS} runs a probe may make")
    groups: list[list[ParameterSet]] = []
    for group, items in raw.items():
        if not isinstance(group, str) or not _NAME.match(group):
            raise ValueError(f"invalid name {group!r}: must match {_NAME.pattern}")
        if not isinstance(items, list) or not items:
            raise ValueError(f"{group}: expected a non-empty list of mappings")
        groups.append(
            [
                tuple((f"{group}__{name}", value) for name, value in _parameter_set(item, f"{group}, set {index + 1}"))
                for index, item in enumerate(items)
            ]
        )
    return [reduce(lambda left, right: left + right, combination, ()) for combination in product(*groups)]


def _parameter_set(item: object, where: str) -> ParameterSet:
    if not isinstance(item, dict) or not item:
        raise ValueError(f"{where}: expected a mapping of parameter names to values")
    for name, value in item.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: invalid name {name!r}: must match {_NAME.pattern}")
        if not (value is None or isinstance(value, str | int | float | bool)):
            raise ValueError(f"{where}, {name}: expected a string, a number, true/false or null")
    return tuple(sorted(item.items()))


def check_sql_names(sql: str, sets: ParameterSets) -> None:
    """Raise ValueError unless ``sql`` names (as ``:name``) exactly the parameters every set gives."""
    try:
        in_sql = set(text(sql).compile().params)
    except SQLAlchemyError as error:
        raise ValueError(f"parameters: the query cannot take parameters ({error})") from None
    given = {name for name, _ in sets[0]}
    if in_sql != given:
        absent = ", ".join(f":{name}" for name in sorted(given - in_sql)) or "none"
        unset = ", ".join(f":{name}" for name in sorted(in_sql - given)) or "none"
        raise ValueError(
            f"parameters: the query must name every parameter as :name and no other "
            f"(given but not in the query: {absent}; in the query but not given: {unset})"
        )


def bind(dialect: Dialect, sql: str, parameter_set: ParameterSet) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    """The statement in the driver's parameter style and the arguments the driver binds to it."""
    statement, positions = _compiled(dialect, sql)
    values = dict(parameter_set)
    if positions is None:
        return statement, values
    return statement, tuple(values[name] for name in positions)


@lru_cache(maxsize=1024)
def _compiled(dialect: Dialect, sql: str) -> tuple[str, tuple[str, ...] | None]:
    # SQLAlchemy turns :name into the driver's style (%(name)s, ?, …) and escapes % where that style needs it.
    compiled = text(sql).compile(dialect=dialect)
    positions = tuple(compiled.positiontup or ()) if dialect.positional else None
    return compiled.string, positions
