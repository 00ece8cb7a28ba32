"""Pydantic models of targets.yml and queries.yml: strict, frozen, unknown keys rejected."""

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    model_validator,
)

from app.config.parameters import ParameterSets, check_sql_names, parse_parameters
from app.config.patterns import RowPattern, compile_row_pattern
from app.config.session_settings import SettingValue, check_name, check_value

METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: object) -> object:
    """Accept Prometheus-style durations (``500ms``, ``10s``, ``1m``) or plain seconds."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            raise ValueError("too large for a number of seconds") from None
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 500ms, 10s or 1m")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return value


def duration_seconds(value: str) -> float:
    """``value`` (``500ms``, ``10s``, ``15m`` or plain seconds) in seconds; ValueError if it is none of those."""
    seconds = _parse_duration(value)
    if not isinstance(seconds, float) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration such as 500ms, 10s or 15m")
    return seconds


# Prometheus sets these on every series it scrapes: a sample's own would be renamed exported_job/exported_instance.
TARGET_LABELS = frozenset({"job", "instance"})


def _reject_reserved_label(name: object) -> object:
    if not isinstance(name, str):
        return name  # not a name at all: the type check after this says so
    if name.startswith("__"):
        raise ValueError(f"label name {name!r} is reserved (names starting with __ belong to Prometheus)")
    if name in TARGET_LABELS:
        raise ValueError(f"label name {name!r} is reserved (Prometheus sets job and instance on every scraped series)")
    return name


Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetricName = Annotated[str, Field(pattern=METRIC_NAME_PATTERN)]
LabelName = Annotated[str, Field(pattern=LABEL_NAME_PATTERN), BeforeValidator(_reject_reserved_label)]
Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0, le=3600)]
# A credentials_command: the program and its arguments, run without a shell (app/config/credentials.py).
Argv = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
# How long credentials a command printed without a lifetime of their own stay good: up to a week.
Lifetime = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0, le=7 * 86400)]


# A target's session_settings: server variables by name (which ones, checked at load per driver:
# app/config/session_settings.py), each a number, true/false or a text of safe characters.
SessionSettings = dict[
    Annotated[str, AfterValidator(check_name)],
    Annotated[SettingValue, PlainValidator(check_value)],
]

# Seconds a statement waits for a lock (a table another session locked) before it fails, as mysqld_exporter's.
LOCK_WAIT_TIMEOUT = 2.0

# Series one metric may give per probe: a query that suddenly returns a row per session or per table
# must not flood Prometheus. Rows beyond it are counted as skipped (reason max_rows).
DEFAULT_MAX_ROWS = 1000
# Characters in one label value at most: a row with a longer one is skipped (reason label_too_long), not cut short,
# so that two long values cannot become one series.
DEFAULT_MAX_LABEL_LENGTH = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


MetricKind = Literal["gauge", "counter", "untyped"]


def _compile_pattern(value: object) -> RowPattern:
    """A regular expression, compiled to match in linear time; its named groups must be label names."""
    if isinstance(value, RowPattern):
        return value
    if not isinstance(value, str):
        raise ValueError("give a regular expression as text")
    pattern = compile_row_pattern(value)
    for group in pattern.group_names:
        if not re.match(LABEL_NAME_PATTERN, group) or group.startswith("__") or group in TARGET_LABELS:
            raise ValueError(f"group {group!r}: a named group becomes a label, and {group!r} cannot be one")
    return pattern


class FamilySpec(_Strict):
    """A rule of ``families``: rows whose name matches go to one labelled family (or are dropped)."""

    match: Annotated[RowPattern, PlainValidator(_compile_pattern)]
    name: MetricName | None = None
    type: MetricKind | None = None
    description: Annotated[str, Field(min_length=1)] | None = None
    drop: StrictBool = False

    @model_validator(mode="after")
    def _names_a_family_or_drops(self) -> "FamilySpec":
        if self.drop:
            if self.name is not None or self.type is not None or self.description is not None:
                raise ValueError("drop: a dropped row has no name, type or description")
        elif self.name is None or self.type is None or self.description is None:
            raise ValueError("give name, type and description (or drop: true)")
        return self


class MetricSpec(_Strict):
    """One metric of a query set: the SQL that feeds it and how its rows become samples."""

    query: Annotated[str, Field(min_length=1)]
    type: MetricKind
    description: Annotated[str, Field(min_length=1)]
    prefix: StrictBool = True
    numbers: Literal["sql", "mysqld_exporter"] = "sql"
    name_from: Annotated[str, Field(min_length=1)] | None = None
    families: tuple[FamilySpec, ...] = ()
    labels: tuple[LabelName, ...] = ()
    value: Annotated[str, Field(min_length=1)] | None = None
    values: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)] | None = None
    value_label: LabelName | None = None
    static_value: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None
    static_labels: dict[LabelName, str] = {}
    timestamp_value: Annotated[str, Field(min_length=1)] | None = None
    parameters: Annotated[ParameterSets, BeforeValidator(parse_parameters)] | None = None
    max_rows: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = DEFAULT_MAX_ROWS
    max_label_length: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = DEFAULT_MAX_LABEL_LENGTH
    min_interval: Seconds | None = None
    # The statement's own time limit, enforced by the server where it can (docs/configuration.md).
    timeout: Seconds | None = None

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> "MetricSpec":
        if not self.query.strip():
            raise ValueError("query: is empty")
        given = [key for key in ("value", "values", "static_value") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of value, values and static_value (got {', '.join(given) or 'none'})")
        if self.value_label is not None and self.values is None:
            raise ValueError("value_label: only goes with values")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: a label is listed twice")
        # Columns are found ignoring case (Name and name are one column): so are they compared here.
        if self.values is not None and len({column.lower() for column in self.values}) != len(self.values):
            raise ValueError("values: a column is listed twice")
        label_columns = {label.lower() for label in self.labels}
        for key, column in self._value_columns():
            if column.lower() in label_columns:
                raise ValueError(f"{key}: column {column!r} is also listed as a label")
        for name in self.static_labels:
            if name in self.labels:
                raise ValueError(f"static_labels: label {name!r} is also listed in labels")
        if self.values is not None and self.value_label_name in {*self.labels, *self.static_labels}:
            raise ValueError(f"value_label: label {self.value_label_name!r} is also a label of the metric")
        if self.parameters is not None:
            check_sql_names(self.query, self.parameters)
        self._name_from_fits()
        return self

    def _name_from_fits(self) -> None:
        if self.name_from is None:
            if self.families:
                raise ValueError("families: only goes with name_from")
            return
        if self.value is None:
            raise ValueError("name_from: goes with value (one value column), not values or static_value")
        if self.timestamp_value is not None:
            raise ValueError("name_from: does not go with timestamp_value")
        if self.name_from.lower() in {self.value.lower(), *(label.lower() for label in self.labels)}:
            raise ValueError(f"name_from: column {self.name_from!r} is also the value or a label")
        for index, family in enumerate(self.families):
            clash = next((g for g in family.match.group_names if g in {*self.labels, *self.static_labels}), None)
            if clash is not None:
                raise ValueError(f"families.{index}.match: group {clash!r} is also a label of the metric")

    @property
    def value_label_name(self) -> str:
        """The label that names a sample's value column (``values`` only)."""
        return "column" if self.value_label is None else self.value_label

    def _value_columns(self) -> list[tuple[str, str]]:
        columns = [("value", self.value)] if self.value is not None else []
        columns += [("values", column) for column in self.values or ()]
        if self.timestamp_value is not None:
            if self.timestamp_value.lower() in {str(column).lower() for column in self.values or (self.value,)}:
                raise ValueError(f"timestamp_value: column {self.timestamp_value!r} is also a value column")
            columns.append(("timestamp_value", self.timestamp_value))
        return columns


class QueriesFile(_Strict):
    """The whole of queries.yml."""

    namespace: Annotated[str, Field(pattern=r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?$")] = "query_exporter"
    query_sets: dict[Name, dict[MetricName, MetricSpec]]


class TLSSpec(_Strict):
    """TLS to the database server: the CA that signed its certificate, a client certificate, a name check."""

    ca: Annotated[str, Field(min_length=1)] | None = None
    cert: Annotated[str, Field(min_length=1)] | None = None
    key: Annotated[str, Field(min_length=1)] | None = None
    verify_identity: bool = True

    @model_validator(mode="after")
    def _cert_and_key_go_together(self) -> "TLSSpec":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: set both or neither")
        return self


class TargetDefaults(_Strict):
    """Keys applied to every target that does not set them itself."""

    dsn: Annotated[str, Field(min_length=1)] | None = None
    query_sets: tuple[Name, ...] | None = None
    labels: dict[LabelName, str] | None = None
    timeout: Seconds | None = None
    tls: TLSSpec | None = None
    password_file: Annotated[str, Field(min_length=1)] | None = None
    credentials_command: Argv | None = None
    credentials_ttl: Lifetime | None = None
    read_only: StrictBool | None = None
    lock_wait_timeout: Seconds | None = None
    session_settings: SessionSettings | None = None


class TargetSpec(_Strict):
    """One target of targets.yml, after its defaults were applied."""

    dsn: Annotated[str, Field(min_length=1)]
    query_sets: Annotated[tuple[Name, ...], Field(min_length=1)]
    labels: dict[LabelName, str] = {}
    timeout: Seconds = 10.0
    tls: TLSSpec | None = None
    password_file: Annotated[str, Field(min_length=1)] | None = None
    credentials_command: Argv | None = None
    credentials_ttl: Lifetime | None = None
    read_only: StrictBool = True
    # How long a statement waits for a lock before it fails; by default LOCK_WAIT_TIMEOUT, at most the timeout.
    lock_wait_timeout: Seconds | None = None
    # Server variables its sessions take (merged name by name over the defaults' own).
    session_settings: SessionSettings = {}

    @model_validator(mode="after")
    def _lock_wait_fits_the_timeout(self) -> "TargetSpec":
        if self.lock_wait_timeout is not None and self.lock_wait_timeout > self.timeout:
            raise ValueError(
                f"lock_wait_timeout: {self.lock_wait_timeout:g}s is longer than the timeout ({self.timeout:g}s)"
            )
        return self

    @property
    def lock_wait_seconds(self) -> float:
        """The lock-wait bound: as set, or LOCK_WAIT_TIMEOUT, never longer than the timeout."""
        return self.lock_wait_timeout if self.lock_wait_timeout is not None else min(LOCK_WAIT_TIMEOUT, self.timeout)


# Engines one module keeps at once (one per address probed): past it, the least recently probed is disposed.
DEFAULT_MAX_TARGETS = 1000


class ModuleSpec(TargetSpec):
    """One module of targets.yml: a target without an address, and where it may connect."""

    default_port: Annotated[int, Field(ge=1, le=65535, strict=True)] | None = None
    allow: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    inventory: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    max_targets: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = DEFAULT_MAX_TARGETS

    @model_validator(mode="after")
    def _says_where_it_may_connect(self) -> "ModuleSpec":
        if not self.allow and not self.inventory:
            raise ValueError("a module needs allow or inventory (or both): where it may connect")
        return self


class TargetsFile(_Strict):
    """The whole of targets.yml, before defaults are merged into each target and module."""

    defaults: TargetDefaults = TargetDefaults()
    targets: dict[Name, dict[str, object]] = {}
    modules: dict[Name, dict[str, object]] = {}
