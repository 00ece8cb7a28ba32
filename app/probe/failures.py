"""What a probe reports of a driver's failure: its message with the cause beneath it, never a password, and the
failure's frames let go of at once."""

import os
import socket
import ssl
import traceback

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.config import Target
from app.drivers.engine_cache import AnyDriver
from app.errors import ConnectFailed

# Characters of a server's or driver's message kept (in results, the history, /logs) and logged: a hostile or
# broken server can send megabytes of it, for every target it answers.
MAX_MESSAGE = 4096

# Where a refused login or privilege is explained: the user to create and what to grant it.
GRANTS_DOC = "docs/quickstart-mysql.md"


def let_go(error: BaseException | None) -> None:
    """Free now what the frames of ``error`` (and of the errors it came from) hold, not at a garbage collection.

    A failed psycopg connect leaves its half-open connection, socket and all, in a frame of its traceback, in a
    reference cycle: each probe of a silent PostgreSQL host would leave one more TCP connection open for a while.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)  # skips the frames still running (this one's callers)
        error = error.__cause__ or error.__context__


def with_cause(error: BaseException) -> str:
    """The driver's message, and what the network or TLS said beneath it when the driver keeps that apart (aiomysql
    says only "Can't connect to MySQL server on '…'", with the OS error as its cause)."""
    message, cause = str(error), error.__cause__
    if isinstance(cause, UnicodeError):
        detail = unexpected_message(cause)  # never the text it failed on: that may be the password
    elif isinstance(cause, ssl.SSLError):
        detail = str(cause)
    elif isinstance(cause, socket.gaierror):
        # Its errno is getaddrinfo's (-2, -3...), which os.strerror knows nothing of ("Unknown error -2").
        detail = f"the host name could not be resolved ({cause.strerror})"
    elif isinstance(cause, TimeoutError):
        detail = "timed out"
    elif isinstance(cause, OSError) and cause.errno:
        detail = os.strerror(cause.errno)
    elif cause is not None:
        detail = str(cause) or type(cause).__name__
    else:
        return message
    return message if detail in message else f"{message}: {detail}"


def unexpected_message(error: BaseException) -> str:
    """An unexpected error's text; a codec's names the character it met and where, and that text may be a password
    (PyMySQL sends it as Latin-1), so only the codec and its complaint are told."""
    if isinstance(error, UnicodeError):
        encoding, reason = getattr(error, "encoding", "?"), getattr(error, "reason", "invalid text")
        return f"the {encoding!r} codec failed on a setting of the target (its DSN, user or password): {reason}"
    return str(error)


def sent_by_server(error: BaseException | None) -> bool:
    """Whether ``error`` is the server's own answer, its text as the server sent it: MySQL's and MariaDB's server
    errors (codes 1000-1999; the client's own are 2000 on), PostgreSQL's with a SQLSTATE."""
    if error is None:
        return False
    code = error.args[0] if error.args else None
    if isinstance(code, int) and not isinstance(code, bool) and 1000 <= code < 2000:
        return True
    return isinstance(getattr(error, "sqlstate", None), str)


def scrub(message: str, target: Target, error: BaseException | None = None) -> str:
    """Driver messages never hold the password (as written or URL-escaped); this makes sure of it, without starring
    it inside the host or target name (see masked). They are cut to MAX_MESSAGE characters, with a note saying so.

    The text of an ``error`` the server sent is left as it is: a server never has the password to quote, and
    starring a password a hostile server wrote into its message would tell it whether its guess was right.
    A refused login or missing privilege also says where the grants sqlprobe needs are documented.
    """
    if not sent_by_server(error):
        message = target.scrubbed(message)
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}… (cut: {len(message) - MAX_MESSAGE} more characters)"
    if "Access denied" in message or "command denied" in message:
        message += f" (the exporter user and its grants: {GRANTS_DOC})"
    return message


# MySQL's and MariaDB's error for a refused login; PostgreSQL's SQLSTATE for one.
_REFUSED = (1045, "28P01")
# What a checkout may raise besides the driver's own errors (its type's ``errors``).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeoutError, SQLAlchemyError, OSError)


def connect_failed(error: BaseException, driver: AnyDriver, target: Target) -> ConnectFailed:
    """What a probe reports of a failed checkout (``error``: the driver's, or one of CONNECT_ERRORS); leased
    credentials the server refused are fetched again early, and the error's frames are let go of."""
    if isinstance(error, PoolTimeoutError):
        return ConnectFailed("no free connection in the target's pool (too many probes of it at once)")
    if isinstance(error, DBAPIError):  # the driver's error, as SQLAlchemy's connect() wraps it
        cause = error.orig or error
        _refused(driver, cause)
        failure = ConnectFailed(scrub(with_cause(cause), target, error.orig))
    elif isinstance(error, driver.errors):  # raw_connection() leaves the driver's errors as they are
        _refused(driver, error)
        failure = ConnectFailed(scrub(with_cause(error), target, error))
    elif isinstance(error, SQLAlchemyError):
        failure = ConnectFailed(scrub(str(error), target))
    else:  # the network, before the driver took it over (a name that does not resolve...)
        failure = ConnectFailed(scrub(f"{type(error).__name__}: {error}", target))
    let_go(error)
    return failure


def _refused(driver: AnyDriver, error: BaseException) -> None:
    """Leased credentials the server refused are fetched again early (rate-limited by the source)."""
    credentials = getattr(driver, "credentials", None)
    code = error.args[0] if error.args else None
    if credentials is not None and (code in _REFUSED or getattr(error, "sqlstate", None) in _REFUSED):
        credentials.refused()
