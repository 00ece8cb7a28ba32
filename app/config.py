"""Load targets.yml and queries.yml into one frozen Config, with every cross-file check in one place."""

import hashlib
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.dsn_secrets import displayed, secret_query_keys
from app.errors import ConfigError, ConfigProblem
from app.schema import MetricSpec, QueriesFile, TargetsFile, TargetSpec, TLSSpec
from app.validation import at_root, validate
from app.yamlfile import KeyPath, YamlDocument, load_yaml, read_named_file

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Families every probe answer carries besides the user's metrics.
BUILTIN_FAMILIES = frozenset(
    {"probe_success", "probe_duration_seconds", "sqlprobe_query_success", "sqlprobe_query_duration_seconds"}
)


@dataclass(frozen=True, slots=True)
class Metric:
    """One user metric, resolved: full exposed name and the columns it reads."""

    key: str
    name: str
    sql: str
    kind: Literal["gauge", "counter"]
    documentation: str
    labels: tuple[str, ...]
    value: str
    query_set: str
    max_rows: int
    min_interval: float | None


@dataclass(frozen=True, slots=True)
class Query:
    """One SQL text to run and every metric it feeds."""

    sql: str
    metrics: tuple[Metric, ...]
    # Seconds a successful result may be served again instead of running the SQL; None: run it every probe.
    min_interval: float | None = field(init=False)

    def __post_init__(self) -> None:
        intervals = [metric.min_interval for metric in self.metrics]
        # Only when every metric it feeds allows it, and then for the shortest interval among them.
        shortest = None if None in intervals else min(interval for interval in intervals if interval is not None)
        object.__setattr__(self, "min_interval", shortest)


@dataclass(frozen=True, slots=True)
class TLS:
    """A target's TLS settings, with absolute paths of files that were readable when the config was loaded."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    verify_identity: bool
    # Of the files' contents: a reload after a certificate was renewed sees other settings, so new engines.
    fingerprint: str


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

    @property
    def display_dsn(self) -> str:
        """The DSN with its password masked and its query-string values left out, safe to show anywhere."""
        return displayed(self.url)

    def queries_for(self, query_sets: frozenset[str] | None) -> tuple[Query, ...]:
        """The queries to run for a probe restricted to ``query_sets`` (all when None)."""
        if query_sets is None:
            return self.queries
        selected = []
        for query in self.queries:
            metrics = tuple(metric for metric in query.metrics if metric.query_set in query_sets)
            if metrics:
                selected.append(Query(query.sql, metrics))
        return tuple(selected)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything sqlprobe serves, loaded and checked."""

    targets: Mapping[str, Target]
    namespace: str
    query_sets: Mapping[str, tuple[Metric, ...]]
    targets_file: str
    queries_file: str


def load_config(targets_path: Path, queries_path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and compile both files; raise ConfigError listing every problem found."""
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    query_sets: dict[str, tuple[Metric, ...]] | None = None
    namespace = ""
    try:
        queries_doc = load_yaml(queries_path)
        queries_file = validate(QueriesFile, queries_doc, at_root, problems)
        if queries_file is not None:
            namespace = queries_file.namespace
            query_sets = _compile_query_sets(queries_file, queries_doc, problems)
    except ConfigError as error:
        problems.extend(error.problems)
    targets: dict[str, Target] = {}
    try:
        targets_doc = load_yaml(targets_path)
        targets = _compile_targets(targets_doc, query_sets, queries_path, environ, problems)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        # A mistake in defaults shows up once per target; report it once.
        raise ConfigError(list(dict.fromkeys(problems)))
    assert query_sets is not None
    return Config(
        targets=MappingProxyType(targets),
        namespace=namespace,
        query_sets=MappingProxyType(query_sets),
        targets_file=str(targets_path),
        queries_file=str(queries_path),
    )


def _compile_query_sets(
    queries: QueriesFile, doc: YamlDocument, problems: list[ConfigProblem]
) -> dict[str, tuple[Metric, ...]]:
    compiled: dict[str, tuple[Metric, ...]] = {}
    for set_name, metric_specs in queries.query_sets.items():
        if not metric_specs:
            problems.append(doc.problem(("query_sets", set_name), "query set has no metrics"))
        metrics: list[Metric] = []
        owners: dict[str, str] = {}
        for key, spec in metric_specs.items():
            metric = _compile_metric(queries.namespace, set_name, key, spec)
            for sample_name in _sample_names(metric):
                if sample_name in BUILTIN_FAMILIES:
                    problems.append(
                        doc.problem(
                            ("query_sets", set_name, key), f"metric name {sample_name!r} is reserved by sqlprobe"
                        )
                    )
                elif sample_name in owners:
                    message = f"metric name {sample_name!r} is also produced by metric {owners[sample_name]!r}"
                    problems.append(doc.problem(("query_sets", set_name, key), message))
                owners.setdefault(sample_name, key)
            metrics.append(metric)
        compiled[set_name] = tuple(metrics)
    return compiled


def _compile_metric(namespace: str, set_name: str, key: str, spec: MetricSpec) -> Metric:
    name = f"{namespace}_{key}" if namespace else key
    if spec.type == "counter":
        # The family is named without _total; its sample carries it (as prometheus-client does).
        name = name.removesuffix("_total")
    return Metric(
        key=key,
        name=name,
        sql=spec.query.strip(),
        kind=spec.type,
        documentation=spec.description,
        labels=spec.labels,
        value=spec.value,
        query_set=set_name,
        max_rows=spec.max_rows,
        min_interval=spec.min_interval,
    )


def _compile_targets(
    doc: YamlDocument,
    query_sets: Mapping[str, tuple[Metric, ...]] | None,
    queries_path: Path,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
) -> dict[str, Target]:
    targets_file = validate(TargetsFile, doc, at_root, problems)
    if targets_file is None:
        return {}
    defaults = targets_file.defaults.model_dump(exclude_none=True)
    targets = {}
    for name, raw in targets_file.targets.items():

        def locate(path: KeyPath, name: str = name, raw: Mapping[str, object] = raw) -> KeyPath:
            """Where a key of this target was written: in the target, or in defaults."""
            if path and path[0] not in raw and path[0] in defaults:
                return ("defaults", *path)
            return ("targets", name, *path)

        spec = validate(TargetSpec, doc, locate, problems, {**defaults, **raw})
        if spec is None:
            continue
        url = _resolve_dsn(spec.dsn, doc, locate(("dsn",)), environ, problems)
        if url is not None and spec.password_file is not None:
            url = _with_password_file(url, spec.password_file, doc, locate, problems)
        tls = None if spec.tls is None else _load_tls(spec.tls, doc, locate, problems)
        tls_usable = spec.tls is None or tls is not None
        metrics = _target_metrics(spec, doc, locate, query_sets, queries_path, problems)
        if url is not None and tls_usable and metrics is not None:
            targets[name] = Target(
                name=name,
                url=url,
                query_sets=spec.query_sets,
                labels=MappingProxyType(dict(spec.labels)),
                timeout=spec.timeout,
                tls=tls,
                read_only=spec.read_only,
                queries=_group_by_sql(metrics),
                metrics=metrics,
            )
    return targets


def _resolve_dsn(
    dsn: str, doc: YamlDocument, path: KeyPath, environ: Mapping[str, str], problems: list[ConfigProblem]
) -> URL | None:
    missing = [name for name in _ENV_REFERENCE.findall(dsn) if name not in environ]
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        problems.append(doc.problem(path, f"environment variable {names} is not set"))
        return None
    try:
        url = make_url(_substitute(dsn, environ))
        url.get_dialect().import_dbapi()
    except NoSuchModuleError as error:
        # The message names only the dialect/driver, never the credentials.
        problems.append(doc.problem(path, f"unsupported database driver: {error}"))
        return None
    except ImportError as error:
        problems.append(doc.problem(path, f"the database driver is not installed (cannot import {error.name!r})"))
        return None
    except (ArgumentError, ValueError):
        # Never quote the DSN: it may hold a password.
        problems.append(
            doc.problem(path, "not a valid SQLAlchemy URL (expected e.g. mysql+pymysql://user:pass@host:3306/)")
        )
        return None
    secrets = secret_query_keys(url)
    for key in secrets:  # the key only, never its value
        message = f"query-string key {key!r} carries a secret: give the password as user:password or in password_file"
        problems.append(doc.problem(path, message))
    return None if secrets else url


def _with_password_file(
    url: URL, name: str, doc: YamlDocument, locate: Callable[[KeyPath], KeyPath], problems: list[ConfigProblem]
) -> URL | None:
    """``url`` with the password read from ``name`` (relative to the targets file), or None after a problem."""
    if url.password is not None:
        problems.append(doc.problem(locate(("password_file",)), "the dsn has a password too: give only one"))
        return None
    path = Path(doc.file).absolute().parent / name
    try:
        # The file's last line break is not part of the password (echo and editors add one).
        password = read_named_file(path).decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        problems.append(doc.problem(locate(("password_file",)), f"{path} is not UTF-8 text"))
        return None
    except ValueError as error:
        problems.append(doc.problem(locate(("password_file",)), str(error)))
        return None
    return url.set(password=password)


def _load_tls(
    spec: TLSSpec, doc: YamlDocument, locate: Callable[[KeyPath], KeyPath], problems: list[ConfigProblem]
) -> TLS | None:
    """The TLS settings, paths made absolute from the targets file's directory; None if a file is unusable."""
    base = Path(doc.file).absolute().parent
    paths = {key: base / name for key in ("ca", "cert", "key") if (name := getattr(spec, key)) is not None}
    fingerprint = hashlib.sha256()
    count = len(problems)
    for key, path in paths.items():
        try:
            fingerprint.update(hashlib.sha256(read_named_file(path)).digest())
        except ValueError as error:
            problems.append(doc.problem(locate(("tls", key)), str(error)))
    if len(problems) > count:
        return None
    tls = TLS(paths.get("ca"), paths.get("cert"), paths.get("key"), spec.verify_identity, fingerprint.hexdigest())
    return tls if _tls_files_load(tls, doc, locate, problems) else None


def _tls_files_load(
    tls: TLS, doc: YamlDocument, locate: Callable[[KeyPath], KeyPath], problems: list[ConfigProblem]
) -> bool:
    """Report a CA file, or a certificate and key, that OpenSSL cannot load; True when all load."""
    count = len(problems)
    # A throwaway context, only to find bad files now rather than at every probe.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.ca is not None:
            context.load_verify_locations(cafile=tls.ca)
    except ssl.SSLError as error:
        problems.append(doc.problem(locate(("tls", "ca")), f"{tls.ca} holds no PEM certificate{_reason(error)}"))
    try:
        if tls.cert is not None:
            context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as error:
        message = f"{tls.cert} and {tls.key} are not a PEM certificate and its private key{_reason(error)}"
        problems.append(doc.problem(locate(("tls", "cert")), message))
    return len(problems) == count


def _reason(error: ssl.SSLError) -> str:
    # OpenSSL's short reason, when it gives one; its full text carries source line numbers.
    return f" ({error.reason})" if error.reason else ""


def _substitute(dsn: str, environ: Mapping[str, str]) -> str:
    """Replace each ${VAR}; a value in the user:password part is URL-escaped, so any password works as it is."""
    scheme_end = dsn.find("://")
    authority = re.match(r"[^/?#]*", dsn[scheme_end + 3 :]) if scheme_end >= 0 else None
    userinfo_end = scheme_end + 3 + authority.group().rfind("@") if authority else -1

    def value(match: re.Match[str]) -> str:
        text = environ[match.group(1)]
        return quote(text, safe="") if scheme_end < match.start() < userinfo_end else text

    return _ENV_REFERENCE.sub(value, dsn)


def _target_metrics(
    spec: TargetSpec,
    doc: YamlDocument,
    locate: Callable[[KeyPath], KeyPath],
    query_sets: Mapping[str, tuple[Metric, ...]] | None,
    queries_path: Path,
    problems: list[ConfigProblem],
) -> tuple[Metric, ...] | None:
    if query_sets is None:
        return None  # queries.yml is broken; its own errors are already reported
    metrics: list[Metric] = []
    owners: dict[str, str] = {}
    ok = True
    for index, set_name in enumerate(spec.query_sets):
        where = locate(("query_sets", index))
        if set_name in spec.query_sets[:index]:
            problems.append(doc.problem(where, f"query set {set_name!r} is listed twice"))
            ok = False
            continue
        if set_name not in query_sets:
            problems.append(doc.problem(where, f"unknown query set {set_name!r} (not defined in {queries_path})"))
            ok = False
            continue
        for metric in query_sets[set_name]:
            clash = next(
                (name for name in _sample_names(metric) if owners.setdefault(name, set_name) != set_name), None
            )
            if clash is not None:
                message = f"metric {clash!r} of query set {set_name!r} is also defined by {owners[clash]!r}"
                problems.append(doc.problem(where, message))
                ok = False
            shadowed = next((label for label in metric.labels if label in spec.labels), None)
            if shadowed is not None:
                # /sd makes the target's labels target labels: Prometheus would rename the sample's to exported_*.
                message = (
                    f"label {shadowed!r} of metric {metric.key!r} (query set {set_name!r}) "
                    "is also one of the target's labels"
                )
                problems.append(doc.problem(where, message))
                ok = False
            metrics.append(metric)
    return tuple(metrics) if ok else None


def _sample_names(metric: Metric) -> tuple[str, ...]:
    """Every name the metric puts into the exposition (family and sample names)."""
    return (metric.name, f"{metric.name}_total") if metric.kind == "counter" else (metric.name,)


def _group_by_sql(metrics: tuple[Metric, ...]) -> tuple[Query, ...]:
    """One Query per distinct SQL text, so a probe runs each text once."""
    grouped: dict[str, list[Metric]] = {}
    for metric in metrics:
        grouped.setdefault(metric.sql, []).append(metric)
    return tuple(Query(sql, tuple(members)) for sql, members in grouped.items())
