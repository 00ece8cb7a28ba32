"""Start-up check of the private parts of uvicorn that sqlprobe leans on, and the fallback.

app/web/http_protocol.py wraps uvicorn's httptools protocol to send an answer in one write and to bound requests'
heads. That is not public API: pyproject.toml pins uvicorn to the minor version the tests ran on, and if a version
without these internals is installed anyway, sqlprobe uses uvicorn's stock protocol, saying so in one warning line
at start-up. The database drivers are used by their public API only.
"""

import inspect
from functools import cache


@cache
def uvicorn_missing() -> tuple[str, ...]:
    """The uvicorn internals http_protocol.py uses that this uvicorn lacks (none: the one-write protocol is on)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return ("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",)
    made = getattr(HttpToolsProtocol, "connection_made", None)
    if made is None or list(inspect.signature(made).parameters) != ["self", "transport"]:
        return ("HttpToolsProtocol.connection_made(transport)",)
    # The parser callbacks and events app/web/http_protocol.py extends to bound a request's head.
    return tuple(
        f"HttpToolsProtocol.{name}"
        for name in ("data_received", "connection_lost", "on_message_begin", "on_headers_complete")
        if not callable(getattr(HttpToolsProtocol, name, None))
    )


def fallback_warnings() -> list[str]:
    """One line per dependency whose internals are missing, naming them and the fallback taken."""
    from importlib.metadata import version

    warnings = []
    if missing := uvicorn_missing():
        warnings.append(
            f"uvicorn {version('uvicorn')} lacks {', '.join(missing)}: answers use uvicorn's stock HTTP protocol "
            "(two writes each, and without --max-header-size, --header-timeout and --max-connections; sqlprobe was "
            "tested with the version pinned in pyproject.toml)"
        )
    return warnings
