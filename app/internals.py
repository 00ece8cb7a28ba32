"""Start-up checks of the private parts of PyMySQL and uvicorn that sqlprobe leans on, and the fallbacks.

app/mysql_wire.py reads and writes a PyMySQL connection's socket itself and app/engines.py's connection class
overrides how PyMySQL builds its TLS context: both cost a third of a query's CPU less than PyMySQL's cursor and
a context per connection. app/http_protocol.py wraps uvicorn's httptools protocol to send an answer in one write.
None of this is public API: pyproject.toml pins both to the minor versions the tests ran on, and if a version
without these internals is installed anyway, sqlprobe uses PyMySQL's cursor and default TLS context, and
uvicorn's stock protocol, saying so in one warning line each at start-up.
"""

import inspect
from functools import cache
from typing import Any

# What app/mysql_wire.py and the connection class in app/engines.py use of a PyMySQL connection.
_PYMYSQL_INSTANCE = ("_sock", "_read_timeout", "_write_timeout", "encoding", "use_unicode", "decoders")
_PYMYSQL_METHODS = ("_force_close", "_create_ssl_ctx")


@cache
def pymysql_missing() -> tuple[str, ...]:
    """The PyMySQL internals sqlprobe's fast path uses that this PyMySQL lacks (none: the fast path is on)."""
    from pymysql import connections, converters, err

    connection_class = connections.Connection
    missing = [f"Connection.{name}" for name in _PYMYSQL_METHODS if not callable(getattr(connection_class, name, None))]
    try:
        # Not connected (defer_connect is public): only what __init__ sets up.
        connection: Any = connections.Connection(defer_connect=True, ssl_disabled=True)
    except Exception as error:  # noqa: BLE001 - any failure here means an API other than the one tested
        return (*missing, f"Connection(defer_connect=True) ({type(error).__name__})")
    missing += [f"Connection.{name}" for name in _PYMYSQL_INSTANCE if not hasattr(connection, name)]
    for module, name in ((connections, "TEXT_TYPES"), (converters, "through"), (err, "raise_mysql_exception")):
        if not hasattr(module, name):
            missing.append(f"{module.__name__}.{name}")
    return tuple(missing)


@cache
def uvicorn_missing() -> tuple[str, ...]:
    """The uvicorn internals app/http_protocol.py uses that this uvicorn lacks (none: the one-write protocol is on)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return ("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",)
    made = getattr(HttpToolsProtocol, "connection_made", None)
    if made is None or list(inspect.signature(made).parameters) != ["self", "transport"]:
        return ("HttpToolsProtocol.connection_made(transport)",)
    # The parser callbacks and events app/http_protocol.py extends to bound a request's head.
    return tuple(
        f"HttpToolsProtocol.{name}"
        for name in ("data_received", "connection_lost", "on_message_begin", "on_headers_complete")
        if not callable(getattr(HttpToolsProtocol, name, None))
    )


def fallback_warnings() -> list[str]:
    """One line per dependency whose internals are missing, naming them and the fallback taken."""
    from importlib.metadata import version

    warnings = []
    if missing := pymysql_missing():
        warnings.append(
            f"PyMySQL {version('PyMySQL')} lacks {', '.join(missing)}: probes use PyMySQL's cursor and a TLS "
            "context per connection (slower; sqlprobe was tested with the version pinned in pyproject.toml)"
        )
    if missing := uvicorn_missing():
        warnings.append(
            f"uvicorn {version('uvicorn')} lacks {', '.join(missing)}: answers use uvicorn's stock HTTP protocol "
            "(two writes each, and without --max-header-size, --header-timeout and --max-connections; sqlprobe was "
            "tested with the version pinned in pyproject.toml)"
        )
    return warnings
