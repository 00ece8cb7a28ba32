"""Files a target or module names for its secrets (password_file, tls ca/cert/key): read, checked, fingerprinted.

The digest of each file read is kept, so that a file that changes later (a rotated password, a renewed
certificate) can be noticed without keeping its contents.
"""

import hashlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from app.config.schema import TLSSpec
from app.config.yamlfile import KeyPath, YamlDocument, read_named_file
from app.errors import ConfigProblem

Locate = Callable[[KeyPath], KeyPath]
# The SHA-256 of each secret file a config read, by absolute path.
Digests = dict[str, str]


@dataclass(frozen=True, slots=True)
class TLS:
    """A target's TLS settings, with absolute paths of files that were readable when the config was loaded."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    verify_identity: bool
    # Of the files' contents: a reload after a certificate was renewed sees other settings, so new engines.
    fingerprint: str


def _read(path: Path, digests: Digests) -> bytes:
    data = read_named_file(path)
    digests[str(path)] = hashlib.sha256(data).hexdigest()
    return data


def with_password_file(
    url: URL, name: str, doc: YamlDocument, locate: Locate, problems: list[ConfigProblem], digests: Digests
) -> URL | None:
    """``url`` with the password read from ``name`` (relative to the targets file), or None after a problem."""
    if url.password is not None:
        problems.append(doc.problem(locate(("password_file",)), "the dsn has a password too: give only one"))
        return None
    path = Path(doc.file).absolute().parent / name
    try:
        # The file's last line break is not part of the password (echo and editors add one).
        password = _read(path, digests).decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        problems.append(doc.problem(locate(("password_file",)), f"{path} is not UTF-8 text"))
        return None
    except ValueError as error:
        problems.append(doc.problem(locate(("password_file",)), str(error)))
        return None
    return url.set(password=password)


def load_tls(
    spec: TLSSpec, doc: YamlDocument, locate: Locate, problems: list[ConfigProblem], digests: Digests
) -> TLS | None:
    """The TLS settings, paths made absolute from the targets file's directory; None if a file is unusable."""
    base = Path(doc.file).absolute().parent
    paths = {key: base / name for key in ("ca", "cert", "key") if (name := getattr(spec, key)) is not None}
    fingerprint = hashlib.sha256()
    count = len(problems)
    for key, path in paths.items():
        try:
            fingerprint.update(hashlib.sha256(_read(path, digests)).digest())
        except ValueError as error:
            problems.append(doc.problem(locate(("tls", key)), str(error)))
    if len(problems) > count:
        return None
    tls = TLS(paths.get("ca"), paths.get("cert"), paths.get("key"), spec.verify_identity, fingerprint.hexdigest())
    return tls if _tls_files_load(tls, doc, locate, problems) else None


def _tls_files_load(tls: TLS, doc: YamlDocument, locate: Locate, problems: list[ConfigProblem]) -> bool:
    """Report a CA file, or a certificate and key, that OpenSSL cannot load; True when all load."""
    count = len(problems)
    # A throwaway context, only to find bad files now rather than at every probe.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.ca is not None:
            context.load_verify_locations(cafile=tls.ca)
    except ssl.SSLError as error:
        problems.append(doc.problem(locate(("tls", "ca")), f"{tls.ca} holds no PEM certificate{_reason(error)}"))
    try:
        if tls.cert is not None:
            context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as error:
        message = f"{tls.cert} and {tls.key} are not a PEM certificate and its private key{_reason(error)}"
        problems.append(doc.problem(locate(("tls", "cert")), message))
    return len(problems) == count


def _reason(error: ssl.SSLError) -> str:
    # OpenSSL's short reason, when it gives one; its full text carries source line numbers.
    return f" ({error.reason})" if error.reason else ""


def changed_files(digests: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    """(path, new digest) of each file whose contents differ from ``digests``; a file that cannot be read is skipped."""
    for path, digest in digests.items():
        try:
            current = hashlib.sha256(read_named_file(Path(path))).hexdigest()
        except ValueError:
            continue  # mid-rotation or gone: what runs now keeps running
        if current != digest:
            yield path, current
