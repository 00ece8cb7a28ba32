"""Load targets.yml and queries.yml into one frozen Config, with every cross-file check in one place."""

import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from sqlalchemy.engine import URL

from app.config.addresses import AllowRule, parse_allow_rule
from app.config.credentials import load_credentials_command
from app.config.dsn import dsn_template, resolve_dsn
from app.config.model import BUILTIN_FAMILIES, Config, FamilyRule, Metric, Module, Query, Target
from app.config.parameters import ParameterSets
from app.config.schema import MetricSpec, ModuleSpec, QueriesFile, TargetsFile, TargetSpec
from app.config.secret_files import Digests, Locate, load_tls, with_password_file
from app.config.session_settings import session_settings
from app.config.statements import (
    backslash_codec,
    syntax_of,
)
from app.config.target_checks import prefix_clashes, sample_names, target_metrics
from app.config.validation import at_root, validate
from app.config.yamlfile import KeyPath, YamlDocument, load_yaml
from app.errors import ConfigError, ConfigProblem


def load_config(targets_path: Path, queries_path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and compile both files; raise ConfigError listing every problem found."""
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    query_sets: dict[str, tuple[Metric, ...]] | None = None
    namespace = ""
    queries_doc: YamlDocument | None = None
    try:
        queries_doc = load_yaml(queries_path)
        queries_file = validate(QueriesFile, queries_doc, at_root, problems)
        if queries_file is not None:
            namespace = queries_file.namespace
            query_sets = _compile_query_sets(queries_file, queries_doc, problems)
    except ConfigError as error:
        problems.extend(error.problems)
    targets: dict[str, Target] = {}
    modules: dict[str, Module] = {}
    digests: Digests = {}
    try:
        targets_doc = load_yaml(targets_path)
        targets, modules = _compile_targets(targets_doc, query_sets, queries_doc, environ, problems, digests)
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
        modules=MappingProxyType(modules),
        secret_files=MappingProxyType(digests),
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
            if metric.name_from is not None and any(name.startswith(f"{metric.name}_") for name in BUILTIN_FAMILIES):
                message = f"metric name {metric.name!r}: the names of its families may be reserved by sqlprobe"
                problems.append(doc.problem(("query_sets", set_name, key), message))
            for sample_name in sample_names(metric):
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
        for _, metric, message in prefix_clashes(metrics):
            problems.append(doc.problem(("query_sets", set_name, metric.key), message))
        compiled[set_name] = tuple(metrics)
    return compiled


def _compile_metric(namespace: str, set_name: str, key: str, spec: MetricSpec) -> Metric:
    name = _family_name(f"{namespace}_{key}" if namespace and spec.prefix else key, spec.type)
    families = tuple(
        FamilyRule(
            pattern=family.match,
            name=None if family.name is None else _family_name(f"{name}_{family.name}", family.type),
            kind=family.type or "untyped",
            documentation=family.description or "",
            label_names=family.match.group_names,
        )
        for family in spec.families
    )
    return Metric(
        key=key,
        name=name,
        sql=spec.query.strip(),
        kind=spec.type,
        documentation=spec.description,
        labels=spec.labels,
        values=spec.values or (() if spec.value is None else (spec.value,)),
        value_label=None if spec.values is None else spec.value_label_name,
        static_value=spec.static_value,
        static_labels=tuple(spec.static_labels.items()),
        timestamp=spec.timestamp_value,
        parameters=spec.parameters or (),
        query_set=set_name,
        max_rows=spec.max_rows,
        max_label_length=spec.max_label_length,
        min_interval=spec.min_interval,
        name_from=spec.name_from,
        families=families,
        numbers=spec.numbers,
        timeout=spec.timeout,
    )


def _family_name(name: str, kind: str | None) -> str:
    """A family's exposed name: a counter's without _total, which its samples carry (as prometheus-client does)."""
    return name.removesuffix("_total") if kind == "counter" else name


def _compile_targets(
    doc: YamlDocument,
    query_sets: Mapping[str, tuple[Metric, ...]] | None,
    queries_doc: YamlDocument | None,
    environ: Mapping[str, str],
    problems: list[ConfigProblem],
    digests: Digests,
) -> tuple[dict[str, Target], dict[str, Module]]:
    targets_file = validate(TargetsFile, doc, at_root, problems)
    if targets_file is None:
        return {}, {}
    defaults = targets_file.defaults.model_dump(exclude_none=True)

    def compile_target(spec: TargetSpec, url: URL | None, name: str, locate: Locate) -> Target | None:
        if url is not None and spec.password_file is not None:
            url = with_password_file(url, spec.password_file, doc, locate, problems, digests)
        tls = None if spec.tls is None else load_tls(spec.tls, doc, locate, problems, digests)
        tls_usable = spec.tls is None or tls is not None
        credentials = None
        if url is not None and spec.credentials_command is not None:
            credentials = load_credentials_command(spec, url, doc, locate, problems)
            tls_usable = tls_usable and credentials is not None
        syntax = syntax_of(url.get_backend_name()) if url is not None else "standard"
        charset = url.query.get("charset") if url is not None and syntax == "mysql" else None
        codec = backslash_codec(charset) if isinstance(charset, str) else None
        metrics = target_metrics(spec, doc, locate, query_sets, queries_doc, problems, syntax, codec)
        timeout_ms = math.ceil(spec.timeout * 1000)
        settings = session_settings(spec.session_settings, syntax, timeout_ms, doc, locate, problems)
        if url is None or not tls_usable or metrics is None or settings is None:
            return None
        return Target(
            name=name,
            url=url,
            query_sets=spec.query_sets,
            labels=MappingProxyType(dict(spec.labels)),
            timeout=spec.timeout,
            tls=tls,
            read_only=spec.read_only,
            lock_wait_timeout=spec.lock_wait_seconds,
            queries=_group_by_sql(metrics),
            metrics=metrics,
            syntax=syntax,
            credentials=credentials,
            session_settings=settings,
        )

    targets = {}
    for name, raw in targets_file.targets.items():
        locate = _locator("targets", name, raw, defaults)
        spec = validate(TargetSpec, doc, locate, problems, _merged(defaults, raw))
        if spec is not None:
            url = resolve_dsn(spec.dsn, doc, locate(("dsn",)), environ, problems)
            if (target := compile_target(spec, url, name, locate)) is not None:
                targets[name] = target
    modules = {}
    for name, raw in targets_file.modules.items():
        locate = _locator("modules", name, raw, defaults)
        module_spec = validate(ModuleSpec, doc, locate, problems, _merged(defaults, raw))
        if module_spec is not None:
            url = dsn_template(module_spec.dsn, doc, locate(("dsn",)), environ, problems)
            template = compile_target(module_spec, url, name, locate)
            allow = _allow_rules(module_spec, doc, locate, problems)
            if template is not None and allow is not None:
                base = Path(doc.file).absolute().parent
                modules[name] = Module(
                    name=name,
                    template=replace(template, module=name),
                    default_port=module_spec.default_port,
                    allow=allow,
                    inventory=tuple(str(base / pattern) for pattern in module_spec.inventory),
                    max_targets=module_spec.max_targets,
                )
    return targets, modules


def _merged(defaults: Mapping[str, object], raw: Mapping[str, object]) -> dict[str, object]:
    """A target's or module's keys over the defaults'; session_settings merged name by name."""
    merged = {**defaults, **raw}
    own, common = raw.get("session_settings"), defaults.get("session_settings")
    if isinstance(own, Mapping) and isinstance(common, Mapping):
        merged["session_settings"] = {**common, **own}
    return merged


def _locator(section: str, name: str, raw: Mapping[str, object], defaults: Mapping[str, object]) -> Locate:
    def locate(path: KeyPath) -> KeyPath:
        """Where a key of this target or module was written: in it, or in defaults (a session setting: by name)."""
        if path and path[0] not in raw and path[0] in defaults:
            return ("defaults", *path)
        own = raw.get("session_settings")
        if len(path) > 1 and path[0] == "session_settings" and isinstance(own, Mapping) and path[1] not in own:
            return ("defaults", *path)
        return (section, name, *path)

    return locate


def _allow_rules(
    spec: ModuleSpec, doc: YamlDocument, locate: Locate, problems: list[ConfigProblem]
) -> tuple[AllowRule, ...] | None:
    rules = []
    for index, text in enumerate(spec.allow):
        try:
            rules.append(parse_allow_rule(text))
        except ValueError as error:
            problems.append(doc.problem(locate(("allow", index)), str(error)))
    return tuple(rules) if len(rules) == len(spec.allow) else None


def _group_by_sql(metrics: tuple[Metric, ...]) -> tuple[Query, ...]:
    """One Query per distinct SQL text (and parameters), so a probe runs each text once."""
    grouped: dict[tuple[str, ParameterSets], list[Metric]] = {}
    for metric in metrics:
        grouped.setdefault((metric.sql, metric.parameters), []).append(metric)
    return tuple(Query(sql, tuple(members), parameters) for (sql, parameters), members in grouped.items())
