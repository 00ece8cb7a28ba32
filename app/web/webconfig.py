"""Load --web-config (the Prometheus exporter toolkit's web.config.yml): TLS and basic auth of sqlprobe's own HTTP."""

import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# The one place that turns pydantic errors into located problems; shared with targets.yml and queries.yml.
from app.config.validation import at_root, validate
from app.config.yamlfile import KeyPath, YamlDocument, load_yaml, read_named_file
from app.errors import ConfigError, ConfigProblem

# $2a$, $2b$ or $2y$ (htpasswd writes 2y), a cost of 04 to 31, then 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def _unsupported(hint: str) -> Callable[[object], object]:
    def reject(_: object) -> object:
        raise ValueError(f"not supported by sqlprobe{hint}")

    return reject


def _known_value(unsupported: Mapping[str, str]) -> Callable[[object], object]:
    """Reject a toolkit value sqlprobe cannot honour with the reason, before the Literal lists the others."""

    def check(value: object) -> object:
        if isinstance(value, str) and value in unsupported:
            raise ValueError(f"{value} is not supported by sqlprobe ({unsupported[value]})")
        return value

    return check


def _bcrypt_hash(value: object) -> object:
    # Never quote the value: a hash is still a secret worth keeping out of logs.
    if isinstance(value, str) and not _BCRYPT_HASH.fullmatch(value):
        raise ValueError("not a bcrypt hash (expected $2y$10$ and 53 more characters, as htpasswd -nBC 10 makes)")
    return value


Unsupported = Annotated[object, BeforeValidator(_unsupported(""))]
FileName = Annotated[str, Field(min_length=1)]
ClientAuthType = Annotated[
    Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"],
    BeforeValidator(
        _known_value(
            {
                "RequestClientCert": "Python cannot accept a client certificate without verifying it",
                "RequireAnyClientCert": "Python cannot accept a client certificate without verifying it",
            },
        )
    ),
]
TLSVersionName = Annotated[
    Literal["TLS12", "TLS13"],
    BeforeValidator(_known_value({name: "Python deprecates TLS 1.0 and 1.1" for name in ("TLS10", "TLS11")})),
]
BcryptHash = Annotated[str, BeforeValidator(_bcrypt_hash)]
# Basic auth sends "user:password": the first colon ends the user.
UserName = Annotated[str, Field(pattern=r"^[^:]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerSpec(_Strict):
    """tls_server_config: the server's certificate, and the client certificates it asks for."""

    cert_file: FileName
    key_file: FileName
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: FileName | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cert: Annotated[object, BeforeValidator(_unsupported("; give the certificate in cert_file"))] = None
    key: Annotated[object, BeforeValidator(_unsupported("; give the key in key_file"))] = None
    client_ca: Annotated[object, BeforeValidator(_unsupported("; give the CA in client_ca_file"))] = None
    client_allowed_sans: Unsupported = None
    cipher_suites: Unsupported = None
    curve_preferences: Unsupported = None
    prefer_server_cipher_suites: Unsupported = None


class WebConfigFile(_Strict):
    """The whole of the web config file."""

    tls_server_config: TLSServerSpec | None = None
    basic_auth_users: dict[UserName, BcryptHash] | None = None
    http_server_config: Unsupported = None
    rate_limit: Unsupported = None


@dataclass(frozen=True, slots=True)
class TLSServer:
    """TLS of sqlprobe's own HTTP, with absolute paths of files that loaded when the config was read."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None
    client_auth: ssl.VerifyMode
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion

    def restrict_versions(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """``context`` limited to the configured TLS versions."""
        context.minimum_version = self.min_version
        context.maximum_version = self.max_version
        return context


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The web config: TLS when set, and the bcrypt hash of each basic-auth user (none: no auth)."""

    tls: TLSServer | None
    users: Mapping[str, bytes]


class UvicornTLS(TypedDict, total=False):
    """The keyword arguments of ``uvicorn.run`` that set up TLS."""

    ssl_certfile: str
    ssl_keyfile: str
    ssl_ca_certs: str | None
    ssl_cert_reqs: int
    ssl_context_factory: Callable[[object, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def load_web_config(path: Path) -> WebConfig:
    """Read and check the web config file; raise ConfigError naming file, line and key of each problem."""
    doc = load_yaml(path)
    problems: list[ConfigProblem] = []
    spec = validate(WebConfigFile, doc, at_root, problems, {} if doc.data is None else None)
    tls = None
    if spec is not None and spec.tls_server_config is not None:
        tls = _resolve_tls(spec.tls_server_config, doc, problems)
    if problems:
        raise ConfigError(problems)
    assert spec is not None
    users = {name: hashed.encode() for name, hashed in (spec.basic_auth_users or {}).items()}
    return WebConfig(tls, MappingProxyType(users))


def uvicorn_tls(web_config: WebConfig | None) -> UvicornTLS:
    """What ``uvicorn.run`` needs to serve HTTPS as ``web_config`` says; nothing for plain HTTP."""
    if web_config is None or web_config.tls is None:
        return {}
    tls = web_config.tls
    return {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
        "ssl_ca_certs": None if tls.client_ca_file is None else str(tls.client_ca_file),
        "ssl_cert_reqs": tls.client_auth,
        # uvicorn has no option for TLS versions: adjust the context it builds from the options above.
        "ssl_context_factory": lambda _, build: tls.restrict_versions(build()),
    }


def _resolve_tls(spec: TLSServerSpec, doc: YamlDocument, problems: list[ConfigProblem]) -> TLSServer:
    """The TLS settings with paths relative to the file made absolute, each loaded once to prove it usable."""
    base = Path(doc.file).absolute().parent
    at: KeyPath = ("tls_server_config",)
    tls = TLSServer(
        cert_file=base / spec.cert_file,
        key_file=base / spec.key_file,
        client_ca_file=None if spec.client_ca_file is None else base / spec.client_ca_file,
        client_auth=_CLIENT_AUTH[spec.client_auth_type],
        min_version=_TLS_VERSIONS[spec.min_version],
        max_version=_TLS_VERSIONS[spec.max_version],
    )
    if tls.min_version > tls.max_version:
        message = f"{spec.min_version} is above max_version {spec.max_version}"
        problems.append(doc.problem((*at, "min_version"), message))
    if tls.client_auth == ssl.CERT_NONE and tls.client_ca_file is not None:
        message = "is set but client_auth_type is NoClientCert: set client_auth_type to RequireAndVerifyClientCert"
        problems.append(doc.problem((*at, "client_ca_file"), message))
    if tls.client_auth != ssl.CERT_NONE and tls.client_ca_file is None:
        message = f"{spec.client_auth_type} needs client_ca_file, the CA that signs the client certificates"
        problems.append(doc.problem((*at, "client_auth_type"), message))
    readable = [_readable(doc, (*at, key), path, problems) for key, path in _files(tls)]
    if all(readable):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # An empty password: an encrypted key fails here instead of OpenSSL prompting on the terminal.
            context.load_cert_chain(tls.cert_file, tls.key_file, password=b"")
        except ssl.SSLError as error:
            message = (
                f"does not load with key_file ({error.reason}): "
                "both must be PEM files of one key pair, the key unencrypted"
            )
            problems.append(doc.problem((*at, "cert_file"), message))
        if tls.client_ca_file is not None:
            try:
                context.load_verify_locations(tls.client_ca_file)
            except ssl.SSLError as error:
                problems.append(doc.problem((*at, "client_ca_file"), f"not a PEM CA certificate ({error.reason})"))
    return tls


def _files(tls: TLSServer) -> list[tuple[str, Path]]:
    files = [("cert_file", tls.cert_file), ("key_file", tls.key_file)]
    return files if tls.client_ca_file is None else [*files, ("client_ca_file", tls.client_ca_file)]


def _readable(doc: YamlDocument, path: KeyPath, file: Path, problems: list[ConfigProblem]) -> bool:
    try:
        read_named_file(file)
    except ValueError as error:
        problems.append(doc.problem(path, str(error)))
        return False
    return True
