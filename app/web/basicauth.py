"""HTTP basic authentication of every request against the bcrypt hashes of the web config."""

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

import bcrypt
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="sqlprobe"'}
_REFUSAL = "sqlprobe needs the username and password of one of its users (HTTP basic authentication).\n"


class BasicAuth:
    """ASGI middleware: a request without a configured user's valid credentials is answered 401."""

    def __init__(self, app: ASGIApp, users: Mapping[str, bytes]) -> None:
        self.app = app
        self.users = users
        # bcrypt is slow on purpose, too slow to pay on every scrape: each user's last verified credentials
        # are remembered as an HMAC under a key of this process only, never as the password itself.
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        # Checked in place of an unknown user's hash, so the time of an answer does not tell which users exist:
        # the hash of random bytes nobody knows, at the cost (and with the salt) of a configured user's hash.
        self._decoy = bcrypt.hashpw(secrets.token_bytes(16), next(iter(users.values()))[:29])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or await self._authenticated(Headers(scope=scope).get("authorization")):
            await self.app(scope, receive, send)
            return
        await PlainTextResponse(_REFUSAL, status_code=401, headers=_CHALLENGE)(scope, receive, send)

    async def _authenticated(self, authorization: str | None) -> bool:
        credentials = _credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, user.encode() + b":" + password, hashlib.sha256).digest()
        remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return True
        hashed = self.users.get(user)
        # On a thread: a bcrypt check holds the CPU for tens of milliseconds, the event loop must not wait on it.
        matches = await asyncio.to_thread(_bcrypt_matches, password, hashed or self._decoy)
        if matches and hashed is not None:
            self._verified[user] = digest
            return True
        return False


def _credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """User and password of a ``Basic`` Authorization header; None when there is none or it is malformed."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        return (user.decode(), password) if separator else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt refuses passwords longer than 72 bytes
        return False
