"""Logging in to MySQL and MariaDB through aiomysql, so that the credentials go only where and how they should: the
user name and password withheld until TLS is known to be on when the target requires it, and the password never
in a form a server can read back unless that TLS is verified."""

from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT


async def connect(*, require_tls: bool = False, **arguments: Any) -> Any:
    """aiomysql's connection; closed if connecting is cancelled or fails half-way. With ``require_tls``, refused
    (2026) unless the session is encrypted: aiomysql goes on in clear text when the server does not offer TLS.
    Without TLS, the password is never sent in a form the server could read back (see _Credential).

    It is made unconnected and connected by aiomysql's public way for that, ping(reconnect=True), so that the
    credentials can be given the connection, whose greeting tells whether TLS is on, before they are encoded.
    """
    if require_tls and arguments.get("read_default_file"):
        # aiomysql reads the user and password from the option file after it is given them: not to be withheld.
        raise pymysql.err.OperationalError(2026, TLS_OPTION_FILE)
    # The user name too when TLS is required: it is encoded first, before anything is sent after the greeting, so a
    # session that would go in clear gets no login at all, even for a user without a password.
    credentials = {
        key: _Credential(arguments[key])
        for key in ("user", "password")
        if arguments.get(key) and (require_tls or key == "password")
    }
    arguments |= credentials
    connection = aiomysql.Connection(**arguments)
    for credential in credentials.values():
        credential.connection = connection
        credential.require_tls = require_tls
    try:
        await connection.ping(reconnect=True)
        if require_tls and not connection.server_capabilities & CLIENT.SSL:
            raise pymysql.err.OperationalError(2026, TLS_REFUSED)
    except BaseException:
        connection.close()
        raise
    return connection


TLS_REFUSED = "TLS is required (the target's tls: key), but the server does not offer it"
TLS_OPTION_FILE = (
    "TLS is required (the target's tls: key), but credentials read from the DSN's read_default_file could go out"
    " before TLS is known to be on: give them in the DSN or password_file"
)
CLEAR_TEXT_REFUSED = (
    "the server asked for the password in a form it can read (the mysql_clear_password plugin, or encrypted with a"
    " key the server sends itself) on a connection without verified TLS: refused (give the server TLS and the target"
    " tls:, which verifies its certificate; a server without tls: may be anyone offering any certificate)"
)


class _Credential(str):
    """A password (or, when TLS is required, a user name) that aiomysql encodes for authentication.

    aiomysql sends the password right after the greeting: hashed, or as it is if the server asks for
    mysql_clear_password (in its greeting or by an authentication switch), and it encrypts the session first only if
    the greeting offers TLS. aiomysql has no setting against either, so the credential decides when it is encoded,
    from the server's capabilities (public: Connection.server_capabilities; given a context, aiomysql always starts
    TLS when they offer it, before authenticating):
    - with TLS required (tls:) and no TLS offered, it refuses to be encoded: a man in the middle who strips the
      offer gets no login at all;
    - a password without verified TLS (no tls:, where the TLS a server offers is taken unverified, so any server
      can offer it) is encoded into bytes that can only be hashed (_HashOnly): the clear-text plugin (and RSA with a
      key the server sends, and caching_sha2_password's full login over TLS) append a NUL to the password before
      sending it, and that append is refused. Only a target with tls: sends its password where the server can read
      it, and only to a server whose certificate was verified.
    Both rest on how aiomysql (pinned <0.4 in pyproject.toml) forms what it sends; tests/drivers/test_tls.py and
    tests/drivers/test_clear_text_auth.py fail if that changes.
    """

    connection: Any = None
    require_tls = False

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        data = str(self).encode(encoding, errors)
        if self.require_tls and self.connection is not None and self.connection.server_capabilities & CLIENT.SSL:
            return data  # verified TLS (the target's tls:), which aiomysql starts before authenticating
        if self.require_tls or self.connection is None:
            raise pymysql.err.OperationalError(2026, TLS_REFUSED)
        # Called only for the password without require_tls: the user name is not wrapped then.
        return _HashOnly(data)


class _HashOnly(bytes):
    """A password's bytes on a session without verified TLS: they may be hashed (mysql_native_password, the fast path of
    caching_sha2_password), never joined to anything to be sent as they are."""

    def __add__(self, other: object) -> bytes:
        raise pymysql.err.OperationalError(2059, CLEAR_TEXT_REFUSED)
