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
    driver = f"{url.get_backend_name()}+{url.get_driver_name()}"
    why = ""
    if driver in _ASYNC_DRIVERS:  # the arguments as SQLAlchemy gives them to the driver probes connect with
        url = url.set(drivername=_ASYNC_DRIVERS[driver])
        why = _AIOMYSQL_KEYS_WHY
    dialect = url.get_dialect()()
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
            problems.append(f"query parameter {key!r} is not one the {driver} driver takes{why}")
        elif refused == _OPTION_FILE:
            problems.append(
                f"query parameter {key!r} would have the driver read credentials and settings from an option file:"
                " give them in targets.yml (the dsn, password_file, tls), where sqlprobe keeps the password out of"
                " logs and errors and withholds it until TLS is on"
            )
        elif refused == _VALUE:
            problems.append(f"query parameter {key!r} has a value the {driver} driver does not take")
    return problems


_KEY, _VALUE, _OPTION_FILE = "key", "value", "option file"
# A my.cnf the driver would read credentials and settings from, out of sqlprobe's sight: the password would not be
# masked in errors, nor withheld until TLS is on.
_OPTION_FILE_KEYS = frozenset({"read_default_file", "read_default_group"})


def _aiomysql_takes(arguments: Mapping[str, Any]) -> str | None:
    # Probes connect with aiomysql (PyMySQL's protocol code on asyncio): it takes fewer keys than PyMySQL (no
    # read_timeout: the probe's deadline bounds every wait), and TLS only as the tls: key's context.
    if set(arguments) & _OPTION_FILE_KEYS:
        return _OPTION_FILE
    if not set(arguments) <= _AIOMYSQL_KEYS:
        return _KEY
    # Its values, as PyMySQL's (the same protocol code) checks them: under PyMySQL's names.
    return _pymysql_takes(
        {_PYMYSQL_NAMES.get(key, key): value for key, value in arguments.items() if key != "auth_plugin"}
    )


# aiomysql.connect()'s keyword arguments, but those sqlprobe sets itself (ssl: the tls: key).
# connect_timeout: the probe's deadline bounds connecting (app/drivers/mysql.py says why aiomysql gets none).
_AIOMYSQL_KEYS = frozenset(inspect.signature(aiomysql.Connection).parameters) - {
    "loop",
    "echo",
    "ssl",
    "conv",
    "connect_timeout",
}
_PYMYSQL_NAMES = {"db": "database"}


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


_AIOMYSQL_KEYS_WHY = (
    " (probes connect with aiomysql, PyMySQL's protocol on asyncio: the probe's deadline bounds every wait, and TLS"
    " is set with the tls: key)"
)
# What probes connect with, for the drivers targets.yml names.
_ASYNC_DRIVERS = {"mysql+pymysql": "mysql+aiomysql", "mariadb+pymysql": "mariadb+aiomysql"}

_DRIVER_CHECKS: Mapping[str, Callable[[Mapping[str, Any]], str | None]] = {
    "mysql+pymysql": _aiomysql_takes,
    "mariadb+pymysql": _aiomysql_takes,
    "postgresql+psycopg": _psycopg_takes,
}
