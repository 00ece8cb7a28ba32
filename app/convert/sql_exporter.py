"""sql_exporter's (burningalchemist's) sql_exporter.yml and collector files as sqlprobe's two files."""

import fnmatch
import glob
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from app.convert.dsn import sqlprobe_drivername
from app.convert.output import Conversion, Unreadable, read_yaml, target_name, unused_name

# dburl's scheme aliases (sql_exporter reads its DSNs with xo/dburl) for the backends sqlprobe probes.
_BACKENDS = {
    **dict.fromkeys(("mysql", "my", "maria", "mariadb", "aurora", "percona"), "mysql"),
    **dict.fromkeys(("postgres", "postgresql", "pg", "pgsql", "pgx", "px"), "postgresql"),
    **dict.fromkeys(("sqlite", "sqlite3", "sq", "file"), "sqlite"),
}
_SECRET_SCHEMES = ("awssecretsmanager", "gcpsecretmanager", "hashivault", "k8ssecret")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_LONGEST_INTERVAL = 3600  # sqlprobe's longest min_interval
_GLOBAL_ADVICE = {
    "scrape_timeout_offset": "sqlprobe answers 0.5 s before Prometheus's scrape timeout",
    "scrape_error_drop_interval": "sqlprobe counts errors in sqlprobe_query_errors_total",
    "max_connections": "sqlprobe keeps 2 connections (+2 overflow) per target",
    "max_idle_connections": "sqlprobe keeps 2 connections (+2 overflow) per target",
    "max_connection_lifetime": "sqlprobe replaces a pooled connection that went stale on the spot",
    "ping_interval": "sqlprobe's probe_success says whether the target answered",
    "warmup_delay": "sqlprobe runs a query when Prometheus scrapes its target",
    "enable_query_metrics": "sqlprobe always exports sqlprobe_query_duration_seconds per metric",
}


def convert(path: Path) -> Conversion:
    """Convert sql_exporter's configuration at ``path`` (and its collector files); Unreadable if it is not one."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not ({"target", "jobs"} & set(data)):
        raise Unreadable(f"{path} is not a sql_exporter configuration: no target or jobs")
    conversion = Conversion(f"sql_exporter configuration {path}")
    settings = data.get("global") or {}
    timeout = _global_settings(settings, conversion)
    collectors = _collectors(data, path, conversion)
    for key in data:
        if key not in ("global", "target", "jobs", "collectors", "collector_files"):
            conversion.note(str(key), "unknown key, not converted")
    default_interval = settings.get("min_interval")
    for name, (collector, where) in collectors.items():
        _query_set(name, collector, where, default_interval, conversion)
    if isinstance(data.get("target"), dict):
        target = data["target"]
        name = str(target.get("name") or "sql_exporter")
        _target(name, target.get("data_source_name"), target.get("collectors"), {}, "target", timeout, conversion)
    for index, job in enumerate(data.get("jobs") or ()):
        _job(job, f"jobs[{index}]", timeout, conversion)
    if data.get("jobs"):
        conversion.note(
            "jobs",
            "sql_exporter labels each sample with job and instance; Prometheus sets both when it scrapes sqlprobe "
            "(instance is the target's name with the relabeling of examples/prometheus.yml)",
        )
    return conversion


def _global_settings(settings: dict[str, Any], conversion: Conversion) -> str | None:
    """The targets' timeout from scrape_timeout; notes for the settings sqlprobe has no use for."""
    for key in settings:
        if key in _GLOBAL_ADVICE:
            conversion.note(f"global.{key}", f"not converted: {_GLOBAL_ADVICE[key]}")
        elif key not in ("scrape_timeout", "min_interval"):
            conversion.note(f"global.{key}", "unknown key, not converted")
    seconds = _seconds(settings.get("scrape_timeout"))
    if seconds is None or seconds <= 0:
        return None
    return f"{seconds:g}s"


def _seconds(raw: object) -> float | None:
    """A Prometheus duration (``1m30s``, ``500ms``) in seconds, or None if it is none."""
    if raw is None:
        return None
    match = _DURATION.match(str(raw).strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds, milliseconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds + milliseconds / 1000


def _collectors(data: dict[str, Any], path: Path, conversion: Conversion) -> dict[str, tuple[dict[str, Any], str]]:
    """Every collector, inline or from collector_files (globs relative to the config's directory), by name."""
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for index, collector in enumerate(data.get("collectors") or ()):
        if isinstance(collector, dict) and collector.get("collector_name"):
            found[str(collector["collector_name"])] = (collector, f"collectors[{index}]")
    for pattern in data.get("collector_files") or ():
        full = pattern if Path(pattern).is_absolute() else str(path.parent / pattern)
        for file in sorted(glob.glob(full)):
            collector = read_yaml(Path(file))
            if isinstance(collector, dict) and collector.get("collector_name"):
                found[str(collector["collector_name"])] = (collector, file)
            else:
                conversion.note(file, "not a collector (no collector_name), not converted")
    return found


def _query_set(
    name: str, collector: dict[str, Any], where: str, default_interval: object, conversion: Conversion
) -> None:
    queries = {str(query.get("query_name")): query.get("query") for query in collector.get("queries") or ()}
    interval = collector.get("min_interval", default_interval)
    options = _min_interval(interval, f"{where}: min_interval", conversion)
    metrics = {}
    for index, metric in enumerate(collector.get("metrics") or ()):
        converted = _metric(metric, queries, f"{where}: metrics[{index}]", conversion)
        if converted is not None:
            metrics[str(metric["metric_name"])] = {**converted, **options}
    renamed = [key for key, metric in metrics.items() if metric["type"] == "counter" and not key.endswith("_total")]
    if renamed:
        conversion.note(where, f"counters are exported with _total added, as sqlprobe names them: {', '.join(renamed)}")
    if metrics:
        conversion.query_sets[unused_name(target_name(name), conversion.query_sets)] = metrics
    else:
        conversion.note(where, "no metric converted")


def _min_interval(raw: object, where: str, conversion: Conversion) -> dict[str, str]:
    seconds = _seconds(raw)
    if not seconds:
        return {}
    if seconds > _LONGEST_INTERVAL:
        conversion.note(where, f"not converted: sqlprobe's min_interval takes up to {_LONGEST_INTERVAL}s")
        return {}
    return {"min_interval": f"{seconds:g}s"}


def _metric(
    metric: dict[str, Any], queries: dict[str, Any], where: str, conversion: Conversion
) -> dict[str, Any] | None:
    name = metric.get("metric_name")
    sql = metric.get("query") or queries.get(str(metric.get("query_ref")))
    kind = str(metric.get("type", "")).lower()
    if not name or not isinstance(sql, str) or kind not in ("gauge", "counter"):
        conversion.note(
            where, "needs metric_name, type gauge or counter, and query or a known query_ref: not converted"
        )
        return None
    converted: dict[str, Any] = {"query": sql.strip(), "type": kind, "description": metric.get("help") or name}
    if metric.get("key_labels"):
        converted["labels"] = list(metric["key_labels"])
    values = list(metric.get("values") or ())
    if len(values) == 1 and not metric.get("value_label"):
        converted["value"] = values[0]
    elif values:
        converted["values"] = values
        converted["value_label"] = metric.get("value_label")
    if metric.get("static_value") is not None:
        converted["static_value"] = metric["static_value"]
    if metric.get("static_labels"):
        converted["static_labels"] = {str(key): str(value) for key, value in metric["static_labels"].items()}
    if metric.get("timestamp_value"):
        converted["timestamp_value"] = metric["timestamp_value"]
        conversion.note(
            f"{where}.timestamp_value",
            "a row whose timestamp is NULL is exported without a timestamp by sqlprobe; sql_exporter drops it",
        )
    return converted


def _job(job: object, where: str, timeout: str | None, conversion: Conversion) -> None:
    if not isinstance(job, dict):
        conversion.note(where, "not a mapping, not converted")
        return
    for index, static in enumerate(job.get("static_configs") or ()):
        labels = {str(key): str(value) for key, value in (static.get("labels") or {}).items()}
        for name, dsn in (static.get("targets") or {}).items():
            place = f"{where}.static_configs[{index}].targets.{name}"
            _target(str(name), dsn, job.get("collectors"), labels, place, timeout, conversion)


def _target(
    name: str,
    dsn: object,
    collector_refs: object,
    labels: dict[str, str],
    where: str,
    timeout: str | None,
    conversion: Conversion,
) -> None:
    query_sets: list[str] = []
    for reference in collector_refs if isinstance(collector_refs, list) else ():
        matched = [set_name for set_name in conversion.query_sets if fnmatch.fnmatchcase(set_name, str(reference))]
        if not matched:
            conversion.note(where, f"collector {reference!r} was not converted (or is unknown)")
        query_sets += [set_name for set_name in matched if set_name not in query_sets]
    url = _dsn(dsn, where, conversion)
    if url is None or not query_sets:
        conversion.note(where, "not converted")
        return
    target: dict[str, Any] = {"dsn": url, "query_sets": query_sets}
    if labels:
        target["labels"] = labels
    if timeout is not None:
        target["timeout"] = timeout
    new_name = unused_name(target_name(name), conversion.targets)
    if new_name != name:
        conversion.note(where, f"became target {new_name!r} (sqlprobe's names take letters, digits, _ . : -)")
    conversion.targets[new_name] = target


def _socket_directory(path: str) -> tuple[str, str]:
    """dburl's reading of a Unix socket path: the longest existing directory, then the database name."""
    directory = path
    while directory.count("/") > 1 and not Path(directory).is_dir():
        directory = directory.rpartition("/")[0]
    return directory, path[len(directory) :].strip("/")


def _dsn(raw: object, where: str, conversion: Conversion) -> str | None:
    """A dburl DSN as a SQLAlchemy URL with the driver sqlprobe ships, or None after noting why not."""
    if not isinstance(raw, str) or ("://" not in raw and ":" not in raw):
        conversion.note(where, "no data_source_name sqlprobe can read")
        return None
    scheme, _, rest = raw.partition(":")
    if scheme in _SECRET_SCHEMES:
        conversion.note(where, f"{scheme} secret reference: write the DSN with ${{VAR}} for its password instead")
        return None
    backend = _BACKENDS.get(scheme.split("+")[0].lower())
    drivername = None if backend is None else sqlprobe_drivername(backend)
    if drivername is None:
        conversion.note(where, f"sqlprobe does not probe {scheme} databases")
        return None
    if backend == "sqlite":
        return f"sqlite:///{unquote(rest.removeprefix('//'))}"
    parts = urlsplit(raw)
    options = parse_qsl(parts.query, keep_blank_values=True)
    path = parts.path
    if backend == "postgresql" and not parts.hostname and path.count("/") > 1:
        directory, database = _socket_directory(path)
        options.append(("host", directory))
        path = f"/{database}"
        conversion.note(where, f"Unix socket directory {directory}: became the host option of the DSN")
    if backend == "mysql" and options:
        conversion.note(where, "the Go MySQL driver's options were left out (PyMySQL takes other ones)")
        options = []
    query = f"?{urlencode(options)}" if options else ""
    # sql_exporter reads a DSN as written, sqlprobe replaces ${VAR} in one: a literal $ becomes %24, which reads
    # back as $ (urlencode did so for the options already).
    netloc, path = parts.netloc.replace("$", "%24"), path.replace("$", "%24")
    return f"{drivername}://{netloc}{path}{query}"
