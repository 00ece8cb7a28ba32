"""Credentials leased from a target's credentials_command: run when first needed, on the event loop (never a
thread, never a shell), reused until shortly before they expire, one run at a time per target however many
probes wait. What the command prints is kept here only: it reaches no message, log, page or metric."""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.config.credentials import CredentialsCommand
from app.config.dsn_secrets import masked
from app.errors import ConnectFailed

# The environment variable that tells a module's command which server is probed (host:port).
ADDRESS_VARIABLE = "SQLPROBE_ADDRESS"
# Credentials are fetched again once this share of their lifetime has passed: before they expire, not after.
REFRESH_AT = 0.8
# Seconds before the probe's deadline by which a command must have finished: the probe then says why it failed.
MARGIN = 0.25
# Seconds between early re-fetches after the server refused the credentials: a wrong grant must not run the command
# at every probe.
REFUSED_REFETCH_INTERVAL = 30.0
# Characters of the command's standard error told at most (its first line).
MAX_STDERR = 300
# What a fetch ended with, as sqlprobe_credentials_fetch_total's result label says it.
SUCCESS, FAILED, TIMEOUT, INVALID = "success", "failed", "timeout", "invalid_output"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one run of the command gave."""

    user: str | None  # None: the DSN's user
    password: str
    fetched_at: float  # time.monotonic()
    lifetime: float | None  # seconds; None: good until the server refuses them

    def due(self, now: float) -> bool:
        """Whether they should be fetched again (REFRESH_AT of their lifetime has passed)."""
        return self.lifetime is not None and now >= self.fetched_at + REFRESH_AT * self.lifetime

    def expired(self, now: float) -> bool:
        """Whether their lifetime is over."""
        return self.lifetime is not None and now >= self.fetched_at + self.lifetime


class CredentialsFailed(ConnectFailed):
    """The credentials command could not give credentials: the probe fails with this."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


class CredentialSource:
    """One target's credentials from its command (for a module's target, the command gets its address)."""

    def __init__(self, command: CredentialsCommand, address: str | None, counts: "Counter[str]") -> None:
        self._command = command
        self._address = address
        self._counts = counts  # fetches by result, shared by the target's engines (and a module's addresses)
        self._current: Credentials | None = None
        self._fetching: asyncio.Task[Credentials] | None = None
        self._refetched_at = -REFUSED_REFETCH_INTERVAL

    async def get(self, deadline: float) -> Credentials:
        """Credentials good now: those kept, or the command's next output (awaited by every probe that needs it,
        run once). ``deadline`` (time.monotonic()) bounds a run this call starts; CredentialsFailed if it fails."""
        now = time.monotonic()
        current = self._current
        if current is not None and not current.due(now):
            return current
        if self._fetching is None:
            timeout = max(0.0, deadline - now - MARGIN)
            self._fetching = asyncio.get_running_loop().create_task(self._fetch(timeout))
            self._fetching.add_done_callback(self._fetched)
        try:
            # Shielded: a probe that gives up does not stop the run others wait for (its own timeout ends it).
            return await asyncio.shield(self._fetching)
        except CredentialsFailed:
            if current is not None and not current.expired(time.monotonic()):
                return current  # the renewal failed, but the credentials in use are still good
            raise

    def _fetched(self, task: "asyncio.Task[Credentials]") -> None:
        self._fetching = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._current = task.result()
            self._counts[SUCCESS] += 1
        elif isinstance(error, CredentialsFailed):
            self._counts[error.result] += 1

    def refused(self) -> None:
        """The server refused the credentials (Access denied): fetch new ones for the next connection, at most
        once in REFUSED_REFETCH_INTERVAL."""
        now = time.monotonic()
        if self._current is not None and now - self._refetched_at >= REFUSED_REFETCH_INTERVAL:
            self._refetched_at = now
            self._current = None

    def arguments(self) -> dict[str, Any]:
        """The driver's connect() arguments the credentials replace (for the connection being made now)."""
        current = self._current
        if current is None:
            return {}
        return {"password": current.password} | ({} if current.user is None else {"user": current.user})

    def age(self) -> float | None:
        """Seconds since the credentials in use were fetched; None before the first."""
        return None if self._current is None else time.monotonic() - self._current.fetched_at

    async def _fetch(self, timeout: float) -> Credentials:
        command = self._command
        environment = dict(os.environ)
        if self._address is not None:
            environment[ADDRESS_VARIABLE] = self._address
        if timeout <= 0:
            raise CredentialsFailed(f"no time was left to run the credentials command {command.name}", TIMEOUT)
        try:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except OSError as error:
            raise CredentialsFailed(
                f"the credentials command {command.name} could not be started: {error.strerror}", FAILED
            ) from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate()
        except TimeoutError:
            raise CredentialsFailed(
                f"the credentials command {command.name} did not finish within its timeout of {timeout:.3g}s"
                " (the probe's deadline): killed",
                TIMEOUT,
            ) from None
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                with contextlib.suppress(Exception):
                    await asyncio.shield(process.wait())
        if process.returncode != 0:
            raise CredentialsFailed(_failure(command, process.returncode or 0, out, err), FAILED)
        return _parse(command, out)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _failure(command: CredentialsCommand, status: int, out: bytes, err: bytes) -> str:
    """Why the command failed: its exit status and the first line of its standard error, with nothing of its
    standard output in it (a command may echo what it printed)."""
    how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    lines = err.decode("utf-8", "replace").strip().splitlines()
    first = lines[0].strip() if lines else ""
    for secret in sorted({part.strip() for part in out.decode("utf-8", "replace").splitlines()}, key=len)[::-1]:
        if len(secret) >= 4:
            first = masked(first, secret, ())
    for secret in _strings(out):
        first = masked(first, secret, ())
    if len(first) > MAX_STDERR:
        first = first[:MAX_STDERR] + "…"
    return f"the credentials command {command.name} failed ({how})" + (f": {first}" if first else "")


def _strings(out: bytes) -> list[str]:
    """The string values of JSON output (a password among them), longest first."""
    try:
        found: list[str] = []
        _collect(json.loads(out), found)
    except ValueError:
        return []
    return sorted((value for value in found if len(value) >= 4), key=len, reverse=True)


def _collect(value: object, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)


def _parse(command: CredentialsCommand, out: bytes) -> Credentials:
    """The credentials in what the command printed: one line (the password), or a JSON object with username and
    password at its top level or under data (as ``vault read -format=json`` prints them), and perhaps a lifetime
    (lease_duration, expires_in: seconds)."""
    invalid = CredentialsFailed(
        f"the credentials command {command.name} printed neither a password on one line nor a JSON object with a"
        ' password (at its top level or under "data")',
        INVALID,
    )
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid from None
    now = time.monotonic()
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise invalid from None
        data = document.get("data") if isinstance(document.get("data"), dict) else document
        password, user = data.get("password"), data.get("username")
        if not isinstance(password, str) or not password or not (user is None or (isinstance(user, str) and user)):
            raise invalid
        lifetime = _lifetime(document) or _lifetime(data) or command.ttl
        return Credentials(user, password, now, lifetime)
    line = text.removesuffix("\n").removesuffix("\r")
    if not line or "\n" in line or "\r" in line:
        raise invalid
    return Credentials(None, line, now, command.ttl)


def _lifetime(document: dict[str, Any]) -> float | None:
    for key in ("lease_duration", "expires_in"):
        value = document.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None
