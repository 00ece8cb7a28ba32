"""--web-config: sqlprobe's own HTTP over TLS, with client certificates and basic auth, and the exact errors."""

import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx2 as httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from app.errors import ConfigError
from app.web.webconfig import load_web_config
from tests.helpers import client_for, parse_samples, target, value, write_config
from tests.paths import ROOT_DIR, TESTS_DIR
from tests.served import Served, serve

BAD = TESTS_DIR / "configs" / "bad_web"
ROOT = ROOT_DIR
USER, PASSWORD = "prometheus", "correct horse battery staple"
TARGETS = {"memory": target("sqlite://", "basic")}
SETS: dict[str, Any] = {
    "basic": {"answer": {"query": "select 42 as answer", "type": "gauge", "description": "d", "value": "answer"}}
}


@dataclass(frozen=True)
class PKI:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""

    directory: Path

    def __getitem__(self, name: str) -> Path:
        return self.directory / name

    def context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """A client context that trusts the CA, presenting the client certificate if asked."""
        context = ssl.create_default_context(cafile=self["ca.crt"])
        if client_cert:
            context.load_cert_chain(self["client.crt"], self["client.key"])
        return context


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _signed(directory: Path, name: str, usage: str, *extensions: str) -> None:
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key"]
    _openssl(directory, "req", *key, "-out", f"{name}.csr", "-subj", f"/CN=sqlprobe test {name}")
    (directory / f"{name}.ext").write_text(
        "\n".join(["basicConstraints=critical,CA:FALSE", "keyUsage=digitalSignature", usage, *extensions]) + "\n"
    )
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """Certificates made with openssl for this module's servers and configs."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates: apt-get install openssl")
    directory = tmp_path_factory.mktemp("pki")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key"]
    _openssl(directory, "req", "-x509", *key, "-out", "ca.crt", "-days", "2", "-subj", "/CN=sqlprobe test CA")
    _signed(directory, "server", "extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1")
    _signed(directory, "client", "extendedKeyUsage=clientAuth")
    return PKI(directory)


def _web_config(directory: Path, config: dict[str, Any]) -> str:
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _tls(**extra: str) -> dict[str, Any]:
    # Relative paths: the web config sits beside the certificates (tests/configs/bad_web too).
    return {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **extra}}


def _users() -> dict[str, Any]:
    return {"basic_auth_users": {USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}}


def _probe_answer(client: httpx.Client, url: str) -> float:
    response = client.get(f"{url}/probe", params={"target": "memory"})
    assert response.status_code == 200, response.text
    return value(parse_samples(response.text), "query_exporter_answer")


@pytest.fixture(scope="module")
def https_with_auth(pki: PKI) -> Iterator[Served]:
    """sqlprobe serving HTTPS with the test CA's certificate and one basic-auth user."""
    web_config = _web_config(pki.directory, {**_tls(), **_users()})
    with (
        httpx.Client(verify=pki.context(), auth=(USER, PASSWORD)) as ready,
        serve(pki["auth"], TARGETS, SETS, "--web-config", web_config, scheme="https", client=ready) as running,
    ):
        yield running


def test_https_with_the_ca_serves_probes(pki: PKI, tmp_path: Path) -> None:
    web_config = _web_config(pki.directory, _tls())
    with (
        httpx.Client(verify=pki.context()) as client,
        serve(tmp_path, TARGETS, SETS, "--web-config", web_config, scheme="https", client=client) as running,
    ):
        assert _probe_answer(client, running.url) == 42.0


def test_min_version_turns_away_clients_of_older_tls(pki: PKI, tmp_path: Path) -> None:
    web_config = _web_config(pki.directory, _tls(min_version="TLS13"))
    with (
        httpx.Client(verify=pki.context()) as client,
        serve(tmp_path, TARGETS, SETS, "--web-config", web_config, scheme="https", client=client) as running,
    ):
        tls12 = pki.context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.url}/-/healthy", verify=tls12)


def test_plain_http_to_the_tls_port_gets_no_answer(https_with_auth: Served) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(https_with_auth.url.replace("https://", "http://") + "/-/healthy")


def test_https_without_trusting_the_ca_fails_the_handshake(https_with_auth: Served) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_with_auth.url}/-/healthy", verify=ssl.create_default_context())


@pytest.mark.parametrize("path", ["/probe?target=memory", "/metrics", "/-/healthy", "/", "/no/such/path"])
def test_every_path_without_credentials_is_401_with_a_basic_challenge(
    https_with_auth: Served, pki: PKI, path: str
) -> None:
    response = httpx.get(f"{https_with_auth.url}{path}", verify=pki.context())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="sqlprobe"'
    assert response.text == (
        "sqlprobe needs the username and password of one of its users (HTTP basic authentication).\n"
    )


@pytest.mark.parametrize(
    "credentials", [(USER, "wrong password"), ("nobody", PASSWORD), (USER, ""), (USER, PASSWORD + "x" * 80)]
)
def test_wrong_credentials_are_401(https_with_auth: Served, pki: PKI, credentials: tuple[str, str]) -> None:
    response = httpx.get(f"{https_with_auth.url}/metrics", verify=pki.context(), auth=credentials)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="sqlprobe"'


def test_malformed_authorization_is_401(https_with_auth: Served, pki: PKI) -> None:
    for header in ("Basic !!!not-base64", "Basic cHJvbWV0aGV1cw==", "Bearer abc"):
        response = httpx.get(f"{https_with_auth.url}/metrics", verify=pki.context(), headers={"Authorization": header})
        assert response.status_code == 401, header


def test_right_credentials_reach_probe_and_metrics(https_with_auth: Served, pki: PKI) -> None:
    with httpx.Client(verify=pki.context(), auth=(USER, PASSWORD)) as client:
        assert _probe_answer(client, https_with_auth.url) == 42.0
        own = client.get(f"{https_with_auth.url}/metrics")
        assert own.status_code == 200
        assert value(parse_samples(own.text), "sqlprobe_probes_total", target="memory", result="success") >= 1


def test_a_required_client_certificate_is_the_only_way_in(pki: PKI, tmp_path: Path) -> None:
    web_config = _web_config(
        pki.directory, _tls(client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    )
    with (
        httpx.Client(verify=pki.context(client_cert=True)) as client,
        serve(tmp_path, TARGETS, SETS, "--web-config", web_config, scheme="https", client=client) as running,
    ):
        assert _probe_answer(client, running.url) == 42.0
        # In TLS 1.3 the client has finished its side of the handshake when the server refuses it: the error
        # comes with the answer. In TLS 1.2 the handshake itself fails.
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{running.url}/-/healthy", verify=pki.context())
        tls12 = pki.context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{running.url}/-/healthy", verify=tls12)


def test_a_verified_password_is_not_checked_with_bcrypt_again(
    tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        checks.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    config = write_config(tmp_path, TARGETS, SETS)
    web_config = load_web_config(Path(_web_config(pki.directory, _users())))
    with client_for(config, web_config=web_config) as client:
        statuses = [_status(client, password) for password in (PASSWORD, PASSWORD, "wrong", PASSWORD, "wrong")]
    assert statuses == [200, 200, 401, 200, 401]
    # The first right password and each wrong one cost a bcrypt check; the remembered right one never again.
    assert checks == [PASSWORD.encode(), b"wrong", b"wrong"]


def _status(client: TestClient, password: str) -> int:
    return client.get("/-/healthy", auth=(USER, password)).status_code


def test_without_basic_auth_users_no_credentials_are_asked(tmp_path: Path, pki: PKI) -> None:
    config = write_config(tmp_path, TARGETS, SETS)
    web_config = load_web_config(Path(_web_config(pki.directory, {**_tls(), "basic_auth_users": {}})))
    with client_for(config, web_config=web_config) as client:
        assert client.get("/-/healthy").status_code == 200


def test_relative_paths_start_at_the_web_config_file(pki: PKI) -> None:
    web_config = load_web_config(
        Path(_web_config(pki.directory, _tls(client_auth_type="VerifyClientCertIfGiven", client_ca_file="ca.crt")))
    )
    assert web_config.tls is not None
    assert (web_config.tls.cert_file, web_config.tls.key_file, web_config.tls.client_ca_file) == (
        pki["server.crt"],
        pki["server.key"],
        pki["ca.crt"],
    )
    assert web_config.tls.client_auth == ssl.CERT_OPTIONAL
    assert (web_config.tls.min_version, web_config.tls.max_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


# Each file of tests/configs/bad_web, loaded beside the test certificates ({dir}), with its exact errors in order.
BAD_CASES = {
    "unknown_key.yml": [
        "4: tls_server_config.cert_fil: unknown key",
    ],
    "http_server_config.yml": [
        "4: http_server_config: not supported by sqlprobe",
    ],
    "rate_limit.yml": [
        "1: rate_limit: not supported by sqlprobe",
    ],
    "cipher_suites.yml": [
        "4: tls_server_config.cipher_suites: not supported by sqlprobe",
    ],
    "inline_cert.yml": [
        "1: tls_server_config.cert_file: required key is missing",
        "2: tls_server_config.cert: not supported by sqlprobe; give the certificate in cert_file",
    ],
    "missing_key_file_key.yml": [
        "1: tls_server_config.key_file: required key is missing",
    ],
    "missing_cert_file.yml": [
        "2: tls_server_config.cert_file: cannot read {dir}/nowhere/server.crt: No such file or directory",
    ],
    "key_of_another_cert.yml": [
        "2: tls_server_config.cert_file: does not load with key_file (KEY_VALUES_MISMATCH): both must be PEM files of one key pair, the key unencrypted",
    ],
    "ca_not_pem.yml": [
        "5: tls_server_config.client_ca_file: not a PEM CA certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
    ],
    "client_auth_without_ca.yml": [
        "4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file, the CA that signs the client certificates",
    ],
    "client_ca_without_client_auth.yml": [
        "4: tls_server_config.client_ca_file: is set but client_auth_type is NoClientCert: set client_auth_type to RequireAndVerifyClientCert",
    ],
    "unverified_client_cert.yml": [
        "4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported by sqlprobe (Python cannot accept a client certificate without verifying it)",
    ],
    "unknown_client_auth.yml": [
        "4: tls_server_config.client_auth_type: Input should be 'NoClientCert', 'VerifyClientCertIfGiven' or 'RequireAndVerifyClientCert'",
    ],
    "old_tls_version.yml": [
        "4: tls_server_config.min_version: TLS11 is not supported by sqlprobe (Python deprecates TLS 1.0 and 1.1)",
    ],
    "min_above_max.yml": [
        "4: tls_server_config.min_version: TLS13 is above max_version TLS12",
    ],
    "not_bcrypt.yml": [
        "2: basic_auth_users.alice: not a bcrypt hash (expected $2y$10$ and 53 more characters, as htpasswd -nBC 10 makes)",
        "3: basic_auth_users.bob: not a bcrypt hash (expected $2y$10$ and 53 more characters, as htpasswd -nBC 10 makes)",
    ],
    "user_name_with_colon.yml": [
        "2: basic_auth_users.prometheus:eu: invalid name 'prometheus:eu': must match ^[^:]+$",
    ],
    "users_not_a_mapping.yml": [
        "1: basic_auth_users: expected a mapping (key: value), got a list",
    ],
}


def test_every_bad_web_config_file_has_a_case() -> None:
    assert {path.name for path in BAD.iterdir()} == set(BAD_CASES)


@pytest.mark.parametrize(("case", "expected"), BAD_CASES.items(), ids=list(BAD_CASES))
def test_bad_web_config_is_rejected_with_file_line_key_path_and_reason(
    pki: PKI, case: str, expected: list[str]
) -> None:
    path = Path(shutil.copy(BAD / case, pki.directory / case))
    with pytest.raises(ConfigError) as raised:
        load_web_config(path)
    assert [str(problem) for problem in raised.value.problems] == [
        f"{path}:{line.format(dir=pki.directory)}" for line in expected
    ]


def _sqlprobe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    write_config(tmp_path, TARGETS, SETS)
    return subprocess.run(
        [sys.executable, "-m", "app", "--targets", str(tmp_path / "targets.yml"), "--queries",
         str(tmp_path / "queries.yml"), "--bind", "127.0.0.1:1", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


NOT_BCRYPT = [
    "  {path}:2: basic_auth_users.alice: not a bcrypt hash (expected $2y$10$ and 53 more characters, as htpasswd -nBC 10 makes)",
    "  {path}:3: basic_auth_users.bob: not a bcrypt hash (expected $2y$10$ and 53 more characters, as htpasswd -nBC 10 makes)",
]


def test_sqlprobe_with_a_bad_web_config_exits_1_with_the_errors(tmp_path: Path) -> None:
    path = Path(shutil.copy(BAD / "not_bcrypt.yml", tmp_path / "web.yml"))
    result = _sqlprobe(tmp_path, "--web-config", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].endswith(" ERROR sqlprobe: the configuration has 2 problem(s):")
    assert lines[1:] == [line.format(path=path) for line in NOT_BCRYPT]


def test_check_config_reports_the_web_config_after_the_other_files(tmp_path: Path) -> None:
    path = Path(shutil.copy(BAD / "not_bcrypt.yml", tmp_path / "web.yml"))
    missing = tmp_path / "nowhere.yml"
    # The last --queries wins: a missing queries file, reported with the web config's problems.
    result = _sqlprobe(tmp_path, "--check-config", "--web-config", str(path), "--queries", str(missing))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "sqlprobe: the configuration has 3 problem(s):",
        f"  {missing}: cannot read file: [Errno 2] No such file or directory: '{missing}'",
        *(line.format(path=path) for line in NOT_BCRYPT),
    ]
