"""A target's metrics, checked against each other and against the target: names that clash, labels the target
shadows, several statements in one text (MySQL/MariaDB), and on a read-only target a statement that does not only
read. Said with the file, line and key path of targets.yml, or of queries.yml where the SQL is written."""

from collections.abc import Mapping

from app.config.model import Metric
from app.config.schema import TargetSpec
from app.config.secret_files import Locate
from app.config.sql_lexer import Syntax
from app.config.statements import (
    EXECUTABLE_COMMENT,
    SEVERAL_STATEMENTS,
    as_the_server_reads,
    read_only_problem,
    several_statements,
)
from app.config.yamlfile import YamlDocument
from app.errors import ConfigProblem


def target_metrics(
    spec: TargetSpec,
    doc: YamlDocument,
    locate: Locate,
    query_sets: Mapping[str, tuple[Metric, ...]] | None,
    queries_doc: YamlDocument | None,
    problems: list[ConfigProblem],
    syntax: Syntax,
    codec: str | None = None,
) -> tuple[Metric, ...] | None:
    """The metrics of the target's query sets; None (with the problems said) if they do not fit together, a query
    holds several statements (MySQL/MariaDB), or a read-only target's query does not only read."""
    if query_sets is None or queries_doc is None:
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
            message = f"unknown query set {set_name!r} (not defined in {queries_doc.file})"
            problems.append(doc.problem(where, message))
            ok = False
            continue
        for metric in query_sets[set_name]:
            clash = next((name for name in sample_names(metric) if owners.setdefault(name, set_name) != set_name), None)
            if clash is not None:
                message = f"metric {clash!r} of query set {set_name!r} is also defined by {owners[clash]!r}"
                problems.append(doc.problem(where, message))
                ok = False
            shadowed = next((label for label in metric.label_names if label in spec.labels), None)
            if shadowed is not None:
                # /sd makes the target's labels target labels: Prometheus would rename the sample's to exported_*.
                message = (
                    f"label {shadowed!r} of metric {metric.key!r} (query set {set_name!r}) "
                    "is also one of the target's labels"
                )
                problems.append(doc.problem(where, message))
                ok = False
            mysql = syntax == "mysql"
            if mysql and several_statements(metric.sql):
                message = f"metric {metric.key!r} (query set {set_name!r}): {SEVERAL_STATEMENTS}"
                problems.append(doc.problem(where, message))
                ok = False
            if mysql and any(";" in str(value) for values in metric.parameters or () for _, value in values):
                # Bound into the text the server gets: there, a ';' in a value stands in a string.
                message = f"metric {metric.key!r} (query set {set_name!r}), in its parameters: {SEVERAL_STATEMENTS}"
                problems.append(doc.problem(where, message))
                ok = False
            if spec.read_only and (refusal := _read_only_refusal(metric, syntax, codec)) is not None:
                # Said where the SQL is written, naming the target that refuses it.
                key, message = refusal
                user = doc.problem(where, "")
                located = f"{message} (read-only target: {user.file}:{user.line}: {user.path})"
                problems.append(queries_doc.problem(("query_sets", set_name, metric.key, key), located))
                ok = False
            metrics.append(metric)
    for owner, metric, message in prefix_clashes(metrics):
        if owner.query_set != metric.query_set:  # within one set, said where the set is written
            problems.append(doc.problem(locate(("query_sets",)), f"query set {metric.query_set!r}: {message}"))
            ok = False
    return tuple(metrics) if ok else None


def _read_only_refusal(metric: Metric, syntax: Syntax, codec: str | None) -> tuple[str, str] | None:
    """Why ``metric``'s statement may not run on a read-only target, by the key of queries.yml it is written under;
    ``codec``: a MySQL charset's in which a character is sent as a backslash's byte."""
    problem = read_only_problem(metric.sql, syntax)
    if problem is not None:
        return "query", problem
    values = [str(value) for values in metric.parameters or () for _, value in values]
    if syntax == "mysql" and any(EXECUTABLE_COMMENT.search(value) for value in values):
        # Bound into the text the server gets, where it is refused before sending: refused here, once.
        return "parameters", read_only_problem("/*!*/", syntax) or ""
    for key, texts in (("query", [metric.sql]), ("parameters", values)):
        if codec is not None and any(as_the_server_reads(text, codec) != text for text in texts):
            return key, (
                f"refused on a read-only target: in the DSN's charset ({codec}) a character of it is sent as another"
                " (the yen sign as a backslash), so the server would read the text otherwise: write it in ASCII, or"
                " use charset=utf8mb4"
            )
    return None


def sample_names(metric: Metric) -> tuple[str, ...]:
    """Every name the metric puts into the exposition (family and sample names) that is known at load."""
    if metric.name_from is not None:
        return tuple(name for rule in metric.families if rule.name for name in _names_of(rule.name, rule.kind))
    return _names_of(metric.name, metric.kind)


def _names_of(name: str, kind: str) -> tuple[str, ...]:
    return (name, f"{name}_total") if kind == "counter" else (name,)


def prefix_clashes(metrics: list[Metric]) -> list[tuple[Metric, Metric, str]]:
    """Metrics whose names fall under a ``name_from`` metric's (``name_…``), which names its families at probe time."""
    clashes = []
    for owner in metrics:
        if owner.name_from is None:
            continue
        prefix = f"{owner.name}_"
        for metric in metrics:
            names = (metric.name,) if metric.name_from is not None else sample_names(metric)
            if metric is not owner and any(name.startswith(prefix) or f"{name}_" == prefix for name in names):
                message = f"metric name {metric.name!r} falls under {prefix}*, named from rows by metric {owner.key!r}"
                clashes.append((owner, metric, message))
    return clashes
