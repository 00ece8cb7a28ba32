"""TLS to the database: verified, encrypted sessions, clear errors when verification fails, one SSLContext per setting."""

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from app.drivers import mysql, mysql_login, postgresql
from app.drivers.tls import preferred_tls_context, tls_context
from app.errors import ConfigError
from tests.helpers import (
    ProbeViews,
    client_for,
    metric,
    missing,
    parse_samples,
    probe_views,
    target,
    value,
    wait_until,
    write_config,
)
from tests.postgres import SYSTEM_USER, PostgreSQL
from tests.servers import EXPORTER_USER, LoopbackServer, MariaDB, setup_schema

X509_USER = "x509"

# What the server says about the probe's own session.
TLS_SET = {
    "tls_session": metric(
        "select max(case when variable_name = 'SSL_VERSION' then variable_value end) as version, "
        "max(case when variable_name = 'SSL_CIPHER' then variable_value end) as cipher, 1 as encrypted "
        "from information_schema.session_status where variable_name in ('SSL_VERSION', 'SSL_CIPHER')",
        "encrypted",
        "version",
        "cipher",
    )
}
SLOW_SET = {"slow": metric("select sleep(30) as slept", "slept")}


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA, the server and a client it signed, and of a CA that signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=sqlprobe test {name}"),
    )


def _issue(directory: Path, name: str, subject: str, extensions: str) -> None:
    """``name``.pem and ``name``.key, signed by ca.pem."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        directory,
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr"),
        *("-subj", f"/CN={subject}"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext"),
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 (IP SAN only) and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        missing("openssl is not installed: apt-get install openssl")
    directory = tmp_path_factory.mktemp("certificates")
    _make_ca(directory, "ca")
    _make_ca(directory, "other_ca")
    _issue(directory, "server", "127.0.0.1", "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth")
    _issue(directory, "client", X509_USER, "extendedKeyUsage = clientAuth")
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other_ca.pem",
    )


@pytest.fixture(scope="module")
def tls_server(mariadb_paths: tuple[str, str], certificates: Certificates) -> Iterator[MariaDB]:
    """A MariaDB with TLS; the exporter user must use TLS, the x509 user must show a certificate of the CA."""
    server_binary, installer = mariadb_paths
    with tempfile.TemporaryDirectory(prefix="sqlprobe-tls-") as tmp:
        server = MariaDB(
            "tls",
            Path(tmp) / "tls",
            options=[
                f"--ssl-ca={certificates.ca}",
                f"--ssl-cert={certificates.server_cert}",
                f"--ssl-key={certificates.server_key}",
            ],
        )
        try:
            server.install(installer)
            server.start(server_binary)
            setup_schema(server, scale=1)
            server.execute(
                f"alter user '{EXPORTER_USER}'@'127.0.0.1' require ssl",
                f"create user '{X509_USER}'@'127.0.0.1' identified by '{server.password}' require x509",
                f"grant select, process on *.* to '{X509_USER}'@'127.0.0.1'",
            )
            yield server
        finally:
            server.stop()


def _tls(ca: Path, **keys: Any) -> dict[str, Any]:
    """A targets.yml tls block."""
    return {"ca": str(ca), **keys}


def _with_tls(entry: Mapping[str, Any], tls: Mapping[str, Any]) -> dict[str, Any]:
    """A targets.yml entry with a tls block."""
    return {**entry, "tls": dict(tls)}


def _x509_dsn(server: MariaDB) -> str:
    """The DSN of the user that must show a client certificate."""
    return server.dsn.replace(f"//{EXPORTER_USER}:", f"//{X509_USER}:")


def test_client_certificate_with_a_key_of_another_is_a_config_error(tmp_path: Path, certificates: Certificates) -> None:
    tls = _tls(certificates.ca, cert=str(certificates.client_cert), key=str(certificates.server_key))
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, {"db": _with_tls(target("mysql+pymysql://u@127.0.0.1/", "tls"), tls)}, {"tls": TLS_SET})
    assert [str(problem) for problem in raised.value.problems] == [
        f"{tmp_path / 'targets.yml'}:9: targets.db.tls.cert: {certificates.client_cert} and {certificates.server_key} "
        "are not a PEM certificate and its private key (KEY_VALUES_MISMATCH)"
    ]


def test_probe_with_tls_succeeds_on_an_encrypted_verified_session(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    # A relative path starts at the targets file's directory.
    shutil.copy(certificates.ca, tmp_path / "ca.pem")
    config = write_config(
        tmp_path, {"db": _with_tls(target(tls_server.dsn, "tls"), {"ca": "ca.pem"})}, {"tls": TLS_SET}, namespace=""
    )
    tls = config.targets["db"].tls
    assert tls is not None
    assert (tls.ca, tls.cert, tls.key, tls.verify_identity) == (tmp_path / "ca.pem", None, None, True)
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "probe_success") == 1.0
    [(labels, encrypted)] = samples["tls_session"].items()
    assert encrypted == 1.0
    assert dict(labels)["version"].startswith("TLSv1.")
    assert dict(labels)["cipher"] != ""


def test_client_certificate_satisfies_require_x509(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    tls = _tls(certificates.ca, cert=str(certificates.client_cert), key=str(certificates.client_key))
    config = write_config(
        tmp_path, {"db": _with_tls(target(_x509_dsn(tls_server), "tls"), tls)}, {"tls": TLS_SET}, namespace=""
    )
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "probe_success") == 1.0, views.debug
    assert set(views.samples["tls_session"].values()) == {1.0}


def test_target_without_tls_is_refused_by_a_user_that_requires_a_certificate(
    tmp_path: Path, tls_server: MariaDB
) -> None:
    config = write_config(tmp_path, {"db": target(_x509_dsn(tls_server), "tls")}, {"tls": TLS_SET}, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "probe_success") == 0.0
    assert f"connection failed (connect): (1045, \"Access denied for user '{X509_USER}'@'127.0.0.1'" in views.debug
    assert tls_server.password not in views.debug


def test_target_without_tls_keeps_pymysqls_unverified_opportunistic_tls(tmp_path: Path, tls_server: MariaDB) -> None:
    # Unchanged behaviour: PyMySQL encrypts when the server offers it, so REQUIRE SSL alone is met without `tls:`,
    # but nothing is verified; only `tls:` checks whom sqlprobe talks to.
    config = write_config(tmp_path, {"db": target(tls_server.dsn, "tls")}, {"tls": TLS_SET}, namespace="")
    with client_for(config) as client:
        samples = parse_samples(client.get("/probe", params={"target": "db"}).text)
    assert value(samples, "probe_success") == 1.0
    assert set(samples["tls_session"].values()) == {1.0}


def test_server_certificate_from_another_ca_fails_verification_with_a_clear_error(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    config = write_config(
        tmp_path,
        {"db": _with_tls(target(tls_server.dsn, "tls"), _tls(certificates.other_ca))},
        {"tls": TLS_SET},
        namespace="",
    )
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "probe_success") == 0.0
    assert "connection failed (connect): (2003, \"Can't connect to MySQL server on '127.0.0.1'" in views.debug
    # The reason after "failed:" is OpenSSL's wording, which varies between its versions.
    assert "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: " in views.debug


@pytest.mark.parametrize(("verify_identity", "success"), [(True, 0.0), (False, 1.0)])
def test_verify_identity_decides_whether_a_certificate_for_another_name_is_accepted(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates, verify_identity: bool, success: float
) -> None:
    # The certificate names 127.0.0.1 only; the DSN names the same server as localhost.
    dsn = tls_server.dsn.replace("@127.0.0.1:", "@localhost:")
    tls = _tls(certificates.ca, verify_identity=verify_identity)
    config = write_config(tmp_path, {"db": _with_tls(target(dsn, "tls"), tls)}, {"tls": TLS_SET}, namespace="")
    with client_for(config) as client:
        views = probe_views(client, "db")
    assert value(views.samples, "probe_success") == success, views.debug
    if not verify_identity:
        assert set(views.samples["tls_session"].values()) == {1.0}
    else:
        assert "certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'" in views.debug


def test_targets_with_the_same_tls_share_one_ssl_context_and_a_target_without_tls_shares_the_unverified_one(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    config = write_config(
        tmp_path,
        {
            "a": _with_tls(target(tls_server.dsn, "tls"), _tls(certificates.ca)),
            "b": _with_tls(target(tls_server.dsn, "tls", timeout="5s"), _tls(certificates.ca)),
            "unverified_name": _with_tls(target(tls_server.dsn, "tls"), _tls(certificates.ca, verify_identity=False)),
            "plain": target(tls_server.dsn, "tls"),
        },
        {"tls": TLS_SET},
        namespace="",
    )
    # The context each engine hands the driver for every connection it makes (the driver builds none of its own).
    contexts = {name: mysql.connect_args(config.targets[name])["ssl"] for name in config.targets}
    tls = config.targets["a"].tls
    assert tls is not None
    assert contexts["a"] is contexts["b"] is tls_context(tls)
    assert contexts["unverified_name"] is not contexts["a"]
    # Without tls, PyMySQL's default (TLS when the server offers it, unverified), with one context for the process.
    assert contexts["plain"] is preferred_tls_context()
    assert contexts["plain"].verify_mode == ssl.CERT_NONE
    # And the sessions those contexts make are encrypted, as the server sees them.
    with client_for(config) as client:
        for name in config.targets:
            views = probe_views(client, name)
            assert set(views.samples["tls_session"].values()) == {1.0}, views.debug


def test_renewed_certificate_files_give_other_settings_and_another_context_on_reload(
    tmp_path: Path, certificates: Certificates
) -> None:
    shutil.copy(certificates.ca, tmp_path / "ca.pem")
    entry = _with_tls(target("mysql+pymysql://u@127.0.0.1/", "tls"), {"ca": "ca.pem"})
    before = write_config(tmp_path, {"db": entry}, {"tls": TLS_SET}).targets["db"].tls
    assert before == write_config(tmp_path, {"db": entry}, {"tls": TLS_SET}).targets["db"].tls
    shutil.copy(certificates.other_ca, tmp_path / "ca.pem")
    after = write_config(tmp_path, {"db": entry}, {"tls": TLS_SET}).targets["db"].tls
    assert before is not None
    assert after is not None
    assert before != after
    assert tls_context(before) is not tls_context(after)


def test_slow_query_on_a_certificate_only_target_is_killed_over_tls(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    # The connection that sends KILL QUERY must meet REQUIRE X509 too.
    tls = _tls(certificates.ca, cert=str(certificates.client_cert), key=str(certificates.client_key))
    config = write_config(
        tmp_path, {"db": _with_tls(target(_x509_dsn(tls_server), "slow", timeout="60s"), tls)}, {"slow": SLOW_SET}
    )

    caplog.set_level("INFO", logger="app")

    def sleeping() -> list[tuple[Any, ...]]:
        return tls_server.root_query(
            f"select id from information_schema.processlist where user = '{X509_USER}' and info like '%sleep(30)%'"
        )

    with client_for(config) as client:
        response = client.get("/probe", params={"target": "db"}, headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert value(parse_samples(response.text), "probe_success") == 0.0
        assert wait_until(lambda: not sleeping(), 5), sleeping()
    assert "could not stop the running query" not in caplog.text


PG_TLS_SET = {
    "tls_session": metric(
        "select version, cipher, case when ssl then 1 else 0 end as encrypted from pg_stat_ssl "
        "where pid = pg_backend_pid()",
        "encrypted",
        "version",
        "cipher",
    )
}


@pytest.fixture(scope="module")
def tls_postgres(postgres: PostgreSQL, certificates: Certificates) -> Iterator[PostgreSQL]:
    """The session's PostgreSQL with TLS switched on (by reloading its config) for this module's tests."""
    # postgres reads its key only when the key is its own and private.
    for name, source in (("tls-server.pem", certificates.server_cert), ("tls-server.key", certificates.server_key)):
        shutil.copy(source, postgres.root / name)
        (postgres.root / name).chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(postgres.root / name, SYSTEM_USER, pwd.getpwnam(SYSTEM_USER).pw_gid)

    def ssl_is(state: str) -> bool:
        return postgres.superuser_query("show ssl") == [(state,)]

    settings = {
        "ssl_cert_file": postgres.root / "tls-server.pem",
        "ssl_key_file": postgres.root / "tls-server.key",
        "ssl": "on",
    }
    with postgres.superuser_connection() as connection:
        for name, setting in settings.items():
            connection.execute(f"alter system set {name} = '{setting}'")
        connection.execute("select pg_reload_conf()")
    try:
        assert wait_until(lambda: ssl_is("on"), 10), (postgres.root / "server.log").read_text()[-2000:]
        yield postgres
    finally:
        with postgres.superuser_connection() as connection:
            for name in settings:
                connection.execute(f"alter system reset {name}")
            connection.execute("select pg_reload_conf()")
        assert wait_until(lambda: ssl_is("off"), 10)


def test_postgresql_tls_maps_to_libpq_parameters_and_gives_an_encrypted_session(
    tmp_path: Path, tls_postgres: PostgreSQL, certificates: Certificates
) -> None:
    client_tls = _tls(
        certificates.ca, cert=str(certificates.client_cert), key=str(certificates.client_key), verify_identity=False
    )
    config = write_config(
        tmp_path,
        {
            "pg": _with_tls(target(tls_postgres.dsn, "tls"), _tls(certificates.ca)),
            "pg_client": _with_tls(target(tls_postgres.dsn, "tls"), client_tls),
        },
        {"tls": PG_TLS_SET},
    )
    arguments = [postgresql.connect_args(config.targets[name]) for name in ("pg", "pg_client")]
    tls_parameters = {"sslmode", "sslrootcert", "sslcert", "sslkey"}
    assert [{k: v for k, v in each.items() if k in tls_parameters} for each in arguments] == [
        {"sslmode": "verify-full", "sslrootcert": str(certificates.ca)},
        {
            "sslmode": "verify-ca",
            "sslrootcert": str(certificates.ca),
            "sslcert": str(certificates.client_cert),
            "sslkey": str(certificates.client_key),
        },
    ]
    with client_for(config) as client:
        views = probe_views(client, "pg")
    assert value(views.samples, "probe_success") == 1.0, views.debug
    [(labels, encrypted)] = views.samples["query_exporter_tls_session"].items()
    assert encrypted == 1.0
    assert dict(labels)["version"].startswith("TLSv1.")


@pytest.mark.parametrize(
    ("host", "ca", "verify_identity", "error"),
    [
        ("127.0.0.1", "other_ca", True, "certificate verify failed"),
        ("localhost", "ca", True, 'does not match host name "localhost"'),
        ("localhost", "ca", False, None),
    ],
    ids=["other_ca", "verify_full_other_name", "verify_ca_other_name"],
)
def test_postgresql_tls_verifies_the_ca_and_the_name_only_when_verify_identity(
    tmp_path: Path,
    tls_postgres: PostgreSQL,
    certificates: Certificates,
    host: str,
    ca: str,
    verify_identity: bool,
    error: str | None,
) -> None:
    dsn = tls_postgres.dsn.replace("@127.0.0.1:", f"@{host}:")
    tls = _tls(getattr(certificates, ca), verify_identity=verify_identity)
    config = write_config(tmp_path, {"pg": _with_tls(target(dsn, "tls"), tls)}, {"tls": PG_TLS_SET})
    with client_for(config) as client:
        views = probe_views(client, "pg")
    assert value(views.samples, "probe_success") == (1.0 if error is None else 0.0), views.debug
    if error is not None:
        assert error in views.debug, views.debug


def test_a_driver_error_outside_its_own_exceptions_shows_its_message_not_only_its_type(
    tmp_path: Path, certificates: Certificates, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    shutil.copy(certificates.ca, tmp_path / "ca.pem")
    config = write_config(
        tmp_path, {"db": _with_tls(target(server.dsn, "tls"), {"ca": "ca.pem"})}, {"tls": TLS_SET}, namespace=""
    )
    (tmp_path / "ca.pem").unlink()  # gone after the config was loaded: found out when the connection is made
    with client_for(config) as client:
        response = client.get("/probe", params={"target": "db", "debug": "true"})
    assert (
        "unexpected error: FileNotFoundError: [Errno 2] No such file or directory; see sqlprobe's log" in response.text
    )
    assert server.password not in response.text
    assert "probe_success 0" in response.text


class TlsStripper(LoopbackServer):
    """A proxy in the middle, on loopback: it clears the TLS offer (CLIENT_SSL) from the server's greeting, and
    counts what the client sends after it (a login, its password hashed or in clear text)."""

    def __init__(self, backend: int) -> None:
        self._backend = backend
        self.sent_by_client = 0
        self.greetings = 0
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self._backend)) as server:
            header = _read_exactly(server, 4)
            payload = bytearray(_read_exactly(server, int.from_bytes(header[:3], "little")))
            # Protocol version, server version (NUL-terminated), thread id (4), scramble (8), filler (1): then the
            # capability flags' lower two bytes.
            flags_at = payload.index(0, 1) + 1 + 4 + 8 + 1
            flags = int.from_bytes(payload[flags_at : flags_at + 2], "little") & ~CLIENT_SSL
            payload[flags_at : flags_at + 2] = flags.to_bytes(2, "little")
            client.sendall(header + payload)
            self.greetings += 1
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    self.sent_by_client += len(data)
                    server.sendall(data)


CLIENT_SSL = 0x0800


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def _probe_through_stripper(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates, dsn_for: Callable[[int], str]
) -> tuple["TlsStripper", ProbeViews]:
    """Probe, through a TlsStripper in front of ``tls_server``, a target with tls: whose DSN ``dsn_for`` gives for the
    stripper's port; the stripper (closed) and what the probe showed."""
    stripper = TlsStripper(tls_server.port)
    try:
        entry = _with_tls(target(dsn_for(stripper.port), "tls"), _tls(certificates.ca))
        config = write_config(tmp_path, {"db": entry}, {"tls": TLS_SET}, namespace="")
        with client_for(config) as client:
            return stripper, probe_views(client, "db")
    finally:
        stripper.close()


def test_a_proxy_that_strips_the_servers_tls_offer_gets_no_login_and_the_probe_says_why(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    stripper, views = _probe_through_stripper(
        tmp_path, tls_server, certificates, lambda port: tls_server.dsn.replace(f":{tls_server.port}/", f":{port}/")
    )
    assert value(views.samples, "probe_success") == 0.0
    assert "TLS is required (the target's tls: key), but the server does not offer it" in views.debug, views.debug
    # The greeting reached sqlprobe, and nothing went back: no login, so no password, hashed or clear, in clear text.
    assert stripper.greetings >= 1
    assert stripper.sent_by_client == 0


def test_a_proxy_that_strips_the_tls_offer_gets_no_login_for_a_user_without_a_password(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    # An account without a password (its user name, and with the login the session's statements, would go in clear).
    tls_server.execute("create user 'nopass'@'127.0.0.1'", "grant select on probe.* to 'nopass'@'127.0.0.1'")
    try:
        stripper, views = _probe_through_stripper(
            tmp_path, tls_server, certificates, lambda port: f"mysql+pymysql://nopass@127.0.0.1:{port}/probe"
        )
    finally:
        tls_server.execute("drop user 'nopass'@'127.0.0.1'")
    # The greeting reached sqlprobe, and nothing went back: not even the user name.
    assert stripper.greetings >= 1
    assert stripper.sent_by_client == 0
    assert value(views.samples, "probe_success") == 0.0
    assert "TLS is required (the target's tls: key), but the server does not offer it" in views.debug, views.debug


def test_a_proxy_that_strips_the_tls_offer_gets_no_login_for_credentials_from_an_option_file(
    tmp_path: Path, tls_server: MariaDB, certificates: Certificates
) -> None:
    # A DSN's read_default_file is refused at load (tests/config/test_config.py); the connect refuses it too, for a
    # target that requires TLS: aiomysql would read the user and password from the file after sqlprobe wraps them.
    option_file = tmp_path / "my.cnf"
    option_file.write_text(f"[client]\nuser = {EXPORTER_USER}\npassword = {tls_server.password}\n")
    config = write_config(
        tmp_path, {"db": _with_tls(target(tls_server.dsn, "tls"), _tls(certificates.ca))}, {"tls": TLS_SET}
    )
    tls = config.targets["db"].tls
    assert tls is not None
    stripper = TlsStripper(tls_server.port)

    async def attempt() -> BaseException:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            await mysql_login.connect(
                host="127.0.0.1",
                port=stripper.port,
                db="probe",
                read_default_file=str(option_file),
                ssl=tls_context(tls),
                require_tls=True,
            )
        error: BaseException = raised.value
        return error

    try:
        error = asyncio.run(attempt())
    finally:
        stripper.close()
    assert stripper.sent_by_client == 0
    assert "credentials read from the DSN's read_default_file could go out before TLS" in str(error), error
