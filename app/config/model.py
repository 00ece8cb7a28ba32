"""What sqlprobe serves, as loaded from targets.yml and queries.yml: frozen, and derived once at load."""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from sqlalchemy.engine import URL

from app.config.addresses import Address, AllowRule, parse_address
from app.config.credentials import CredentialsCommand
from app.config.dsn_secrets import displayed, masked
from app.config.parameters import ParameterSets
from app.config.patterns import RowPattern
from app.config.secret_files import TLS
from app.config.session_settings import Settings
from app.config.sql_lexer import Syntax

# Families every probe answer carries besides the user's metrics.
BUILTIN_FAMILIES = frozenset(
    {
        "probe_success",
        "probe_duration_seconds",
        "sqlprobe_query_success",
        "sqlprobe_query_duration_seconds",
        "sqlprobe_query_result_age_seconds",
    }
)


MetricKind = Literal["gauge", "counter", "untyped"]


@dataclass(frozen=True, slots=True)
class FamilyRule:
    """Rows of a ``name_from`` metric whose name matches ``pattern`` go to the family ``name`` (None: dropped)."""

    pattern: RowPattern  # matched in time linear in the row name (app/config/patterns.py)
    name: str | None  # the family's full exposed name (counters without _total)
    kind: MetricKind
    documentation: str
    label_names: tuple[str, ...]  # the pattern's named groups, in order


@dataclass(frozen=True, slots=True)
class Metric:
    """One user metric, resolved: full exposed name and the columns it reads."""

    key: str
    name: str
    sql: str
    kind: MetricKind
    documentation: str
    labels: tuple[str, ...]  # columns that become labels
    values: tuple[str, ...]  # columns that hold values: one sample each per row; none with static_value
    value_label: str | None  # the label naming a sample's value column, when several may be
    static_value: float | None  # every row's value, instead of a column's
    static_labels: tuple[tuple[str, str], ...]
    timestamp: str | None  # the column with each sample's time
    parameters: ParameterSets  # one run of the SQL per set; () for one run without parameters
    query_set: str
    max_rows: int
    max_label_length: int
    min_interval: float | None
    # A family per row, named from this column's text after the metric's name (None: one family, the metric's own).
    name_from: str | None
    families: tuple[FamilyRule, ...]  # rows mapped to labelled families, first match wins
    numbers: Literal["sql", "mysqld_exporter"]  # which cell texts are numbers (mysqld_exporter: also ON, YES, …)
    timeout: float | None = None  # seconds the statement may run, enforced by the server where it can
    # Every label name a sample carries, in order: label columns, the value label, static labels.
    label_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        value_label = () if self.value_label is None else (self.value_label,)
        names = (*self.labels, *value_label, *(name for name, _ in self.static_labels))
        object.__setattr__(self, "label_names", names)


@dataclass(frozen=True, slots=True)
class Query:
    """One SQL text to run and every metric it feeds."""

    sql: str
    metrics: tuple[Metric, ...]
    parameters: ParameterSets = ()  # the SQL runs once per set, and its rows are the union of all runs
    # Seconds a successful result may be served again instead of running the SQL; None: run it every probe.
    min_interval: float | None = field(init=False)
    # Rows read at most: one more than the largest max_rows of its metrics, to know that there were more.
    row_limit: int = field(init=False)
    # Seconds its statement may run: the shortest timeout among its metrics; None: the probe's deadline only.
    timeout: float | None = field(init=False)

    def __post_init__(self) -> None:
        timeouts = [metric.timeout for metric in self.metrics if metric.timeout is not None]
        object.__setattr__(self, "timeout", min(timeouts) if timeouts else None)
        intervals = [metric.min_interval for metric in self.metrics]
        # Only when every metric it feeds allows it, and then for the shortest interval among them.
        shortest = None if None in intervals else min(interval for interval in intervals if interval is not None)
        object.__setattr__(self, "min_interval", shortest)
        object.__setattr__(self, "row_limit", max(metric.max_rows for metric in self.metrics) + 1)


@dataclass(frozen=True, slots=True)
class Target:
    """One probe target with its engine settings and its de-duplicated queries."""

    name: str
    url: URL
    query_sets: tuple[str, ...]
    labels: Mapping[str, str]
    timeout: float
    tls: TLS | None
    read_only: bool
    queries: tuple[Query, ...]
    metrics: tuple[Metric, ...]
    module: str | None = None  # the module it was made from for one address, if any
    lock_wait_timeout: float = 2.0  # seconds a statement waits for a lock before it fails
    syntax: Syntax = "standard"  # how its server reads a statement's text (app/config/statements.py)
    # Where its password (and perhaps user name) comes from instead of the DSN, each time it expires.
    credentials: CredentialsCommand | None = None
    # Server variables its sessions take besides sqlprobe's own (session_settings:), names in lower case.
    session_settings: Settings = ()

    @property
    def display_dsn(self) -> str:
        """The DSN with its password masked and its query-string values left out, safe to show anywhere."""
        return displayed(self.url)

    def scrubbed(self, text: str) -> str:
        """``text`` (a driver's message) with the password starred where it stands on its own, not inside the
        target's name or host (see masked)."""
        return masked(text, self.url.password, (self.name, self.url.host or ""))

    def queries_for(self, query_sets: frozenset[str] | None) -> tuple[Query, ...]:
        """The queries to run for a probe restricted to ``query_sets`` (all when None)."""
        if query_sets is None:
            return self.queries
        selected = []
        for query in self.queries:
            metrics = tuple(metric for metric in query.metrics if metric.query_set in query_sets)
            if metrics:
                selected.append(Query(query.sql, metrics, query.parameters))
        return tuple(selected)


# What a module's DSN writes for the probed server's host[:port].
ADDRESS = "{address}"
# The host of a module's DSN until a probe names one: no server answers to it (.invalid is reserved, RFC 2606).
ADDRESS_PLACEHOLDER = "sqlprobe-address.invalid"


class ModuleRequestError(Exception):
    """A module probe that cannot be made; the message is the answer to the client."""


class UnknownModule(ModuleRequestError):
    """The request names a module that targets.yml does not define."""


class InvalidAddress(ModuleRequestError):
    """The target of a module probe is not a plain address."""


class AddressNotAllowed(ModuleRequestError):
    """The address is neither in the module's inventory nor matched by its allow list."""


# The port each driver connects to when the URL names none.
DRIVER_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


@dataclass(frozen=True, slots=True)
class Module:
    """One module of targets.yml, compiled: its target template and where it may connect."""

    name: str
    template: Target  # the module's settings, its URL's host a placeholder
    default_port: int | None
    allow: tuple[AllowRule, ...]
    inventory: tuple[str, ...]  # absolute glob patterns of file_sd files
    max_targets: int

    @property
    def display_dsn(self) -> str:
        """The DSN as written (``{address}`` in it), password masked."""
        return self.template.display_dsn.replace(ADDRESS_PLACEHOLDER, ADDRESS)

    def address(self, text: str) -> Address:
        """``text`` parsed, with the module's default port; InvalidAddress if it is not a plain address."""
        try:
            return parse_address(text).with_default_port(self.default_port)
        except ValueError as error:
            raise InvalidAddress(f"invalid target for module {self.name!r}: {error}") from None

    @property
    def implied_port(self) -> int | None:
        """The port of an address or allow entry written without one: default_port, else the driver's."""
        if self.default_port is not None:
            return self.default_port
        return DRIVER_PORTS.get(self.template.url.get_backend_name())

    def allows(self, address: Address) -> bool:
        """Whether an allow rule matches ``address`` (inventory files are checked apart); an entry without a port
        allows the implied port only."""
        return any(rule.allows(address, self.implied_port) for rule in self.allow)

    def target_for(self, address: Address) -> Target:
        """The target that probes ``address`` with this module's settings (call only once it is allowed)."""
        url = self.template.url.set(host=address.host, port=address.port)
        return replace(self.template, name=f"{self.name}/{address}", url=url)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything sqlprobe serves, loaded and checked."""

    targets: Mapping[str, Target]
    namespace: str
    query_sets: Mapping[str, tuple[Metric, ...]]
    targets_file: str
    queries_file: str
    modules: Mapping[str, Module] = field(default_factory=lambda: MappingProxyType({}))
    # SHA-256 of each password and TLS file read, by path: a change to one is noticed and reloads the config.
    secret_files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
