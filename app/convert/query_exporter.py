"""query-exporter's config.yaml (databases, metrics, queries) as sqlprobe's targets.yml and queries.yml."""

import re
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app.convert.dsn import EnvRef, render, sqlprobe_drivername
from app.convert.output import Conversion, Unreadable, read_yaml, target_name, unused_name

_SECTIONS = ("databases", "metrics", "queries")
_INTERVAL = re.compile(r"^([0-9]+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_NO_EQUIVALENT = {
    "histogram": "select the bucket counts, sum and count from SQL as gauges or counters",
    "summary": "select the count and sum (or quantiles) from SQL as gauges or counters",
    "enum": "select one row per state with 1 for the current one, as a gauge labelled by state",
}
# sqlprobe's longest min_interval.
_LONGEST_INTERVAL = 3600


class FileRef:
    """A value query-exporter reads from a file (``!file``)."""

    def __init__(self, path: Path) -> None:
        self.path = path


def convert(path: Path) -> Conversion:
    """Convert query-exporter's configuration at ``path``; Unreadable if it is not one."""
    data = _load(path)
    if not isinstance(data, dict):
        raise Unreadable(f"{path} is not a query-exporter configuration: expected a mapping at the top")
    absent = [key for key in _SECTIONS if not isinstance(data.get(key), dict)]
    if absent:
        raise Unreadable(f"{path} is not a query-exporter configuration: no {', '.join(absent)} mapping")
    conversion = Conversion(f"query-exporter configuration {path}")
    for key in data:
        if key == "builtin-metrics":
            conversion.note(key, "sqlprobe has its own metrics about queries (sqlprobe_query_duration_seconds, …)")
        elif key not in _SECTIONS:
            conversion.note(str(key), "unknown key, not converted")
    metrics = _metrics(data["metrics"], conversion)
    sets_of = _query_sets(data["queries"], metrics, conversion)
    for name, database in data["databases"].items():
        _target(str(name), database, sets_of, conversion)
    return conversion


def _load(path: Path, including: tuple[Path, ...] = ()) -> Any:
    if path.absolute() in including:
        raise Unreadable(f"{including[-1]} includes {path}, which includes it again")
    return read_yaml(path, _loader(path.parent, (*including, path.absolute())))


def _loader(base: Path, including: tuple[Path, ...]) -> type[yaml.SafeLoader]:
    """A safe YAML loader knowing query-exporter's tags: !env stays a reference, !file a path, !include is read."""

    class Loader(yaml.SafeLoader):
        pass

    def env(loader: yaml.SafeLoader, node: yaml.Node) -> EnvRef:
        return EnvRef(str(loader.construct_scalar(node)))  # type: ignore[arg-type]

    def file(loader: yaml.SafeLoader, node: yaml.Node) -> FileRef:
        return FileRef(base / str(loader.construct_scalar(node)))  # type: ignore[arg-type]

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        return _load(base / str(loader.construct_scalar(node)), including)  # type: ignore[arg-type]

    Loader.add_constructor("!env", env)
    Loader.add_constructor("!file", file)
    Loader.add_constructor("!include", include)
    return Loader


def _metrics(specs: dict[str, Any], conversion: Conversion) -> dict[str, dict[str, Any]]:
    """The metrics sqlprobe can export the same way, as (type, description, labels)."""
    usable = {}
    for name, spec in specs.items():
        where = f"metrics.{name}"
        if not isinstance(spec, dict):
            conversion.note(where, "not a mapping, not converted")
            continue
        kind = spec.get("type")
        if kind not in ("gauge", "counter"):
            advice = _NO_EQUIVALENT.get(str(kind), "export it as a gauge or a counter")
            conversion.note(
                f"{where}.type", f"sqlprobe exports gauges and counters, not {kind}s: not converted; {advice}"
            )
            continue
        if spec.get("increment"):
            conversion.note(
                f"{where}.increment",
                "sqlprobe does not add each run's result to a counter: not converted; select a running total "
                "from the database instead",
            )
            continue
        if "expiration" in spec:
            conversion.note(f"{where}.expiration", "not needed: sqlprobe exports only the rows of the current probe")
        usable[name] = {"type": kind, "description": spec.get("description") or name}
        if spec.get("labels"):
            usable[name]["labels"] = list(spec["labels"])
    return usable


def _query_sets(
    queries: dict[str, Any], metrics: dict[str, dict[str, Any]], conversion: Conversion
) -> dict[str, list[str]]:
    """One query set per query, with a metric per usable metric it feeds; the sets of each database."""
    sets_of: dict[str, list[str]] = {}
    for name, query in queries.items():
        where = f"queries.{name}"
        if not isinstance(query, dict) or not isinstance(query.get("sql"), str):
            conversion.note(where, "no sql, not converted")
            continue
        options: dict[str, Any] = {}
        if "parameters" in query:
            options["parameters"] = query["parameters"]  # both of its forms mean the same in queries.yml
        if "interval" in query:
            options.update(_interval(query["interval"], f"{where}.interval", conversion))
        if "schedule" in query:
            conversion.note(
                f"{where}.schedule",
                "not converted: Prometheus's scrape interval decides when sqlprobe runs a query; "
                "min_interval (seconds) serves a result again instead of running it every scrape",
            )
        if "timeout" in query:
            conversion.note(
                f"{where}.timeout",
                "not converted: the target's timeout bounds the whole probe (default 10s, and the scrape timeout)",
            )
        set_name = target_name(str(name))
        if set_name in conversion.query_sets:
            set_name = unused_name(set_name, conversion.query_sets)
            conversion.note(
                where, f"became query set {set_name!r}: another query has the name {target_name(str(name))!r}"
            )
        blocks = {}
        for metric in query.get("metrics") or ():
            if metric in metrics:
                blocks[metric] = {"query": query["sql"].strip(), **metrics[metric], "value": metric, **options}
        if not blocks:
            conversion.note(where, "feeds no gauge or counter, not converted")
            continue
        conversion.query_sets[set_name] = blocks
        for database in query.get("databases") or ():
            sets_of.setdefault(str(database), []).append(set_name)
    return sets_of


def _interval(raw: object, where: str, conversion: Conversion) -> dict[str, Any]:
    match = _INTERVAL.match(str(raw))
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if not 0 < seconds <= _LONGEST_INTERVAL:
        conversion.note(where, f"not converted: sqlprobe's min_interval takes up to {_LONGEST_INTERVAL}s")
        return {}
    conversion.note(
        where,
        f"became min_interval: {seconds}s (a result is served again for that long; Prometheus's scrapes run the query)",
    )
    return {"min_interval": f"{seconds}s"}


def _target(name: str, database: object, sets_of: dict[str, list[str]], conversion: Conversion) -> None:
    where = f"databases.{name}"
    if not isinstance(database, dict):
        conversion.note(where, "not a mapping, not converted")
        return
    for key, advice in (
        ("connect-sql", "sqlprobe runs no statements at connect: put session settings in the SQL or the DSN"),
        ("connection-pool", "sqlprobe keeps 2 connections (+2 overflow) per target"),
    ):
        if key in database:
            conversion.note(f"{where}.{key}", f"not converted: {advice}")
    query_sets = _distinct_metric_sets(name, sets_of.get(name, []), conversion)
    if not query_sets:
        conversion.note(where, "no query converted for this database: not converted")
        return
    target: dict[str, Any] = {"dsn": None}
    if not _dsn(database.get("dsn"), f"{where}.dsn", target, conversion):
        return
    target["query_sets"] = query_sets
    # query-exporter puts these on every sample; /sd hands them to Prometheus as the target's labels.
    target["labels"] = {
        "database": name,
        **{str(k): _label_value(v) for k, v in (database.get("labels") or {}).items()},
    }
    new_name = unused_name(target_name(name), conversion.targets)
    conversion.targets[new_name] = target
    if new_name != name:
        conversion.note(where, f"became target {new_name!r} (sqlprobe's names take letters, digits, _ . : -)")


def _label_value(value: object) -> str:
    return value.reference if isinstance(value, EnvRef) else str(value)


def _distinct_metric_sets(database: str, sets: list[str], conversion: Conversion) -> list[str]:
    """The database's query sets, leaving out one that would export a metric another already exports."""
    kept: list[str] = []
    owners: dict[str, str] = {}
    for set_name in sets:
        clash = next((metric for metric in conversion.query_sets[set_name] if metric in owners), None)
        if clash is not None:
            conversion.note(
                f"databases.{database}",
                f"query {set_name!r} not run on it: its metric {clash!r} comes from query {owners[clash]!r} there "
                "already (sqlprobe takes one query per metric and target: merge them with UNION ALL)",
            )
            continue
        kept.append(set_name)
        owners.update(dict.fromkeys(conversion.query_sets[set_name], set_name))
    return kept


def _dsn(raw: object, where: str, target: dict[str, Any], conversion: Conversion) -> bool:
    """Put the DSN (and a password file) into ``target``; False after noting why it cannot be converted."""
    if isinstance(raw, EnvRef):
        target["dsn"] = raw.reference
        conversion.note(where, f"kept as {raw.reference}: its value must use mysql+pymysql:// or postgresql+psycopg://")
        return True
    if isinstance(raw, FileRef):
        conversion.note(
            where, "not converted: sqlprobe reads only a password from a file; write the DSN and set password_file"
        )
        return False
    try:
        if isinstance(raw, str):
            url = make_url(raw)
            references: dict[str, EnvRef] = {}
        elif isinstance(raw, dict):
            url, references = _details_url(raw, target)
        else:
            raise ArgumentError("no DSN")
    except (ArgumentError, ValueError, TypeError):
        conversion.note(where, "not a DSN sqlprobe can read: not converted")
        return False
    drivername = sqlprobe_drivername(url.get_backend_name())
    if drivername is None:
        conversion.note(where, f"sqlprobe does not probe {url.get_backend_name()} databases: not converted")
        return False
    if url.drivername != drivername:
        conversion.note(where, f"driver {url.drivername} became {drivername} (the driver sqlprobe ships)")
    if isinstance(raw, str) and url.password is not None:
        conversion.note(where, "holds a password: better ${VAR} from the environment or password_file")
    target["dsn"] = render(url.set(drivername=drivername), references)
    return True


def _details_url(details: dict[str, Any], target: dict[str, Any]) -> tuple[URL, dict[str, EnvRef]]:
    """query-exporter's DSN as a mapping (dialect, user, password, …); !env values become ${VAR} placeholders."""
    references: dict[str, EnvRef] = {}

    def plain(key: str) -> str | None:
        value = details.get(key)
        if isinstance(value, EnvRef):
            placeholder = f"sqlprobeconvertplaceholder{len(references)}"
            references[placeholder] = value
            return placeholder
        return None if value is None else str(value)

    password = details.get("password")
    if isinstance(password, FileRef):
        target["password_file"] = str(password.path)
    port = details.get("port")
    url = URL.create(
        str(details["dialect"]),
        username=plain("user"),
        password=None if isinstance(password, FileRef) else plain("password"),
        host=plain("host"),
        port=None if port is None else int(port),
        database=plain("database"),
        query={str(key): value for key, value in (details.get("options") or {}).items()},
    )
    return url, references
