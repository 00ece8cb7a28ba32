"""A DSN's query parameters, checked at load the way its driver will take them at connect.

SQLAlchemy turns the query string into the driver's connect() arguments (converting some values), and the driver
takes them or not. Found at load, a bad key or value is a config error naming the key; found at connect, it would
fail every probe of the target with an error that says little. Values are never quoted: one may be a secret.
"""

import codecs
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import aiomysql
import psycopg
import pymysql
from psycopg import conninfo
from sqlalchemy.engine import URL


def query_problems(url: URL) -> list[str]:
    """One sentence per query parameter of ``url`` that its driver would not take (none when all are fine).

    Each parameter is tried alone, so that the sentence can name it.
    """
    dialect = url.get_dialect()()
    driver = f"{url.get_backend_name()}+{url.get_driver_name()}"
    takes = _DRIVER_CHECKS.get(driver)
    problems = []
    for key in url.query:
        single = url.set(query={key: url.query[key]})
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                _, arguments = dialect.create_connect_args(single)
                refused = None if takes is None else takes(arguments)
            except Exception:  # noqa: BLE001 - SQLAlchemy's conversion of the value failed, whatever it raised
                refused = _VALUE
        if warned and refused is None:  # SQLAlchemy drops what the driver would not accept (SQLite), and warns
            refused = _KEY
        if refused == _KEY:
            problems.append(f"query parameter {key!r} is not one the {driver} driver takes")
        elif refused == _VALUE:
            problems.append(f"query parameter {key!r} has a value the {driver} driver does not take")
    return problems


_KEY, _VALUE = "key", "value"


def _aiomysql_takes(arguments: Mapping[str, Any]) -> str | None:
    # Probes connect with aiomysql (PyMySQL's protocol code on asyncio): it takes fewer keys than PyMySQL (no
    # read_timeout: the probe's deadline bounds every wait), and TLS only as the tls: key's context.
    if not set(arguments) <= _AIOMYSQL_KEYS or "ssl" in arguments:
        return _KEY
    return _pymysql_takes(arguments)


# aiomysql.connect()'s keyword arguments, but those sqlprobe sets itself.
_AIOMYSQL_KEYS = frozenset(inspect.signature(aiomysql.Connection).parameters) - {"loop", "echo", "ssl"}


def _pymysql_takes(arguments: Mapping[str, Any]) -> str | None:
    try:
        # Its checks without connecting: unknown arguments, timeouts out of range, unreadable TLS files.
        connection = pymysql.connections.Connection(**arguments, defer_connect=True)
    except TypeError:
        return _KEY
    except Exception:  # noqa: BLE001 - whatever PyMySQL raises for a value it refuses
        return _VALUE
    try:
        # A charset PyMySQL knows but Python cannot encode (swe7, binary, dec8, ...) would fail every statement.
        codecs.lookup(connection.encoding)
    except LookupError:
        return _VALUE
    return None


def _psycopg_takes(arguments: Mapping[str, Any]) -> str | None:
    try:
        parameters = conninfo.conninfo_to_dict(conninfo.make_conninfo("", **arguments))
    except psycopg.Error:
        return _KEY
    try:
        conninfo.timeout_from_conninfo(parameters)
    except psycopg.Error:
        return _VALUE
    return None


_DRIVER_CHECKS: Mapping[str, Callable[[Mapping[str, Any]], str | None]] = {
    "mysql+pymysql": _aiomysql_takes,
    "mariadb+pymysql": _aiomysql_takes,
    "postgresql+psycopg": _psycopg_takes,
}
