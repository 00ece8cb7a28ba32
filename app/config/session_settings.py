"""A target's ``session_settings:``: server variables its sessions take, checked at load against the variables
that make sense for a monitoring session and that an unprivileged exporter user may set.

A value goes into SQL text (MySQL/MariaDB's SET SESSION) or libpq's connection options (PostgreSQL's
``-c name=value``): it is a number, true/false, or a text of safe characters only (no quotes, semicolons,
backslashes or blanks), so that it can never end its place there.
"""

import math
import re
from collections.abc import Callable, Mapping

from app.config.sql_lexer import Syntax
from app.config.yamlfile import KeyPath, YamlDocument
from app.errors import ConfigProblem

SettingValue = bool | int | float | str
Settings = tuple[tuple[str, SettingValue], ...]

# What a text value may hold: enough for 64MB, +00:00, READ-COMMITTED, a search_path list, an application name.
SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.,:+/-]{1,100}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# MySQL and MariaDB: each name with the servers that take it for a session (checked as an unprivileged user on
# MariaDB 10.11; MySQL's from its manual). A name the server does not know fails the connection with its message.
MYSQL_SETTINGS: Mapping[str, str] = {
    "long_query_time": "MySQL, MariaDB",
    "min_examined_row_limit": "MySQL, MariaDB",
    "net_read_timeout": "MySQL, MariaDB",
    "net_write_timeout": "MySQL, MariaDB",
    "wait_timeout": "MySQL, MariaDB",
    "group_concat_max_len": "MySQL, MariaDB",
    "tmp_table_size": "MySQL, MariaDB",
    "max_heap_table_size": "MySQL, MariaDB",
    "sort_buffer_size": "MySQL, MariaDB",
    "join_buffer_size": "MySQL, MariaDB",
    "max_join_size": "MySQL, MariaDB",
    "div_precision_increment": "MySQL, MariaDB",
    "time_zone": "MySQL, MariaDB",
    "max_execution_time": "MySQL",
    "max_statement_time": "MariaDB",
    "slow_query_log": "MariaDB (global only on MySQL)",
    "log_slow_query": "MariaDB 10.11+",
    "log_slow_query_time": "MariaDB 10.11+",
    "log_slow_rate_limit": "MariaDB",
    "log_slow_filter": "MariaDB",
}
# PostgreSQL: each name with what it needs (user: any role may set it for its session).
POSTGRESQL_SETTINGS: Mapping[str, str] = {
    "application_name": "user",
    "statement_timeout": "user",
    "work_mem": "user",
    "temp_buffers": "user",
    "jit": "user",
    "max_parallel_workers_per_gather": "user",
    "search_path": "user",
    "timezone": "user",
    "extra_float_digits": "user",
    "log_min_duration_statement": "superuser, or GRANT SET ON PARAMETER (PostgreSQL 15+)",
}
# sqlprobe's own settings: a target changes them through its own keys, or not at all.
OWN_SETTINGS: Mapping[str, str] = {
    "autocommit": "each statement runs in a transaction of its own",
    "transaction_read_only": "set by read_only:",
    "tx_read_only": "set by read_only:",
    "default_transaction_read_only": "set by read_only:",
    "lock_wait_timeout": "set by lock_wait_timeout:",
    "innodb_lock_wait_timeout": "set by lock_wait_timeout:",
    "lock_timeout": "set by lock_wait_timeout:",
    "idle_readonly_transaction_timeout": "set from timeout:",
    "idle_in_transaction_session_timeout": "set from timeout:",
}
_SERVERS = {"mysql": "MySQL/MariaDB", "postgresql": "PostgreSQL"}
_PG_DURATION = re.compile(r"^(\d+)(ms|s|min|h)?$")
_PG_UNITS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, None: 1}


def check_value(value: object) -> SettingValue:
    """``value`` if it may stand in SQL text or libpq options as it is; ValueError if not."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("give a finite number")
        return value
    if isinstance(value, str) and not SAFE_TEXT.match(value):
        raise ValueError(
            f"{value!r}: a text value holds letters, digits and _ . , : + / - only (no quotes, semicolons or"
            " blanks), at most 100"
        )
    if not isinstance(value, str):
        raise ValueError("give a number, true/false or a text")
    return value


def check_name(name: object) -> object:
    if isinstance(name, str) and not NAME.match(name):
        raise ValueError(f"{name!r} is not a server variable's name")
    return name


def session_settings(
    given: Mapping[str, SettingValue],
    syntax: Syntax,
    timeout_ms: int,
    doc: YamlDocument,
    locate: Callable[[KeyPath], KeyPath],
    problems: list[ConfigProblem],
) -> Settings | None:
    """``given`` as a target's settings (names in lower case), or None with each problem said: a name sqlprobe
    sets itself, one not on its server's list, a PostgreSQL statement_timeout of 0 or past the target's timeout
    (``timeout_ms``)."""
    settings = []
    ok = True
    for written, value in given.items():
        name = written.lower()
        where = locate(("session_settings", written))
        allowed = MYSQL_SETTINGS if syntax == "mysql" else POSTGRESQL_SETTINGS if syntax == "postgresql" else None
        if name in OWN_SETTINGS:
            problems.append(doc.problem(where, f"{name!r} is sqlprobe's own setting: {OWN_SETTINGS[name]}"))
            ok = False
        elif allowed is None:
            problems.append(doc.problem(where, "this driver takes no session settings (MySQL, MariaDB, PostgreSQL)"))
            ok = False
        elif name not in allowed:
            message = (
                f"{name!r} is not a setting sqlprobe lets a {_SERVERS[syntax]} session take"
                " (docs/configuration.md lists them)"
            )
            problems.append(doc.problem(where, message))
            ok = False
        elif name == "statement_timeout" and (problem := _timeout_problem(value, timeout_ms)) is not None:
            problems.append(doc.problem(where, problem))
            ok = False
        else:
            settings.append((name, value))
    return tuple(settings) if ok else None


def _timeout_problem(value: SettingValue, timeout_ms: int) -> str | None:
    """What is wrong with ``value`` as PostgreSQL's statement_timeout of a target of ``timeout_ms``, if anything."""
    match = None if isinstance(value, bool | float) else _PG_DURATION.match(str(value))
    if match is None:
        return f"{value!r} is not a number of milliseconds or a duration such as 500ms or 5s"
    milliseconds = int(match.group(1)) * _PG_UNITS[match.group(2)]
    if not 0 < milliseconds <= timeout_ms:
        return f"{value!r} is not within the target's timeout ({timeout_ms}ms), which sqlprobe's own follows"
    return None
