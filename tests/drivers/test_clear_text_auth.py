"""A server that asks for the password in clear text, on a connection without verified TLS, gets none of it."""

import contextlib
import socket
import ssl
import struct
from pathlib import Path

import pytest
from pymysql.constants import CLIENT

from tests.drivers.test_tls import Certificates, certificates  # noqa: F401 - the fixture, shared with the TLS tests
from tests.helpers import client_for, metric, probe_views, target, value, write_config
from tests.servers import LoopbackServer

PASSWORD = "opensesame42"
REFUSED = "the server asked for the password in a form it can read (the mysql_clear_password plugin"
CAPABILITIES = (
    CLIENT.LONG_PASSWORD
    | CLIENT.LONG_FLAG
    | CLIENT.CONNECT_WITH_DB
    | CLIENT.PROTOCOL_41
    | CLIENT.TRANSACTIONS
    | CLIENT.SECURE_CONNECTION
    | CLIENT.MULTI_RESULTS
    | CLIENT.PLUGIN_AUTH
)  # no CLIENT.SSL: the session stays in clear text


class FakeServer(LoopbackServer):
    """Just enough of a MySQL server on loopback to collect a login: a greeting naming ``greeting_plugin``, then (if
    ``switch_to``) an AuthSwitchRequest to that plugin; it keeps every byte each client sent, then denies access."""

    def __init__(
        self,
        greeting_plugin: str,
        switch_to: str | None,
        tls: ssl.SSLContext | None = None,
        denial: bytes = b"Access denied (fake)",
    ) -> None:
        self._greeting_plugin = greeting_plugin
        self._denial = denial
        self._tls = tls
        self._switch_to = switch_to
        self.received = bytearray()
        self.connections = 0
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            self.connections += 1
            connection.settimeout(5)
            connection.sendall(_packet(0, self._greeting()))
            if self._tls is None:
                self._authenticate(connection, 1)
                return
            # The client's SSLRequest, then the rest inside TLS with any certificate: what it sends there is the
            # server's to read.
            _read(connection, 4 + 32)
            with self._tls.wrap_socket(connection, server_side=True) as encrypted:
                self._authenticate(encrypted, 2)

    def _authenticate(self, client: socket.socket, sequence: int) -> None:
        """The handshake response (packet ``sequence``), an auth switch if asked for, then ERR 1045."""
        if not self._collect(client):
            return
        sequence += 1
        if self._switch_to is not None:
            client.sendall(_packet(sequence, b"\xfe" + self._switch_to.encode() + b"\0" + b"s" * 20 + b"\0"))
            if not self._collect(client):
                return
            sequence += 2
        client.sendall(_packet(sequence, b"\xff" + struct.pack("<H", 1045) + b"#28000" + self._denial))

    def _collect(self, client: socket.socket) -> bool:
        """One packet from the client, kept; False if the client closed the connection instead."""
        header = _read(client, 4)
        if len(header) < 4:
            self.received += header
            return False
        self.received += header + _read(client, int.from_bytes(header[:3], "little"))
        return True

    @property
    def _capabilities(self) -> int:
        return int(CAPABILITIES | (CLIENT.SSL if self._tls is not None else 0))

    def _greeting(self) -> bytes:
        return (
            b"\x0a5.7.99-fake\0"
            + struct.pack("<I", 7)
            + b"abcdefgh\0"
            + struct.pack("<H", self._capabilities & 0xFFFF)
            + bytes([33])
            + struct.pack("<H", 2)
            + struct.pack("<H", self._capabilities >> 16)
            + bytes([21])
            + b"\0" * 10
            + b"ijklmnopqrst\0"
            + self._greeting_plugin.encode()
            + b"\0"
        )


def _packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


def _read(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := client.recv(size - len(data))):
        data += chunk
    return data


@pytest.mark.parametrize("tls", [False, True], ids=["without_tls", "tls_with_its_own_certificate"])
@pytest.mark.parametrize(
    ("greeting_plugin", "switch_to"),
    [("mysql_native_password", "mysql_clear_password"), ("mysql_clear_password", None)],
    ids=["auth_switch", "greeting"],
)
def test_a_server_asking_for_the_clear_text_password_without_verified_tls_gets_none_and_the_probe_says_why(
    tmp_path: Path,
    certificates: Certificates,  # noqa: F811 - the fixture imported above
    greeting_plugin: str,
    switch_to: str | None,
    tls: bool,
) -> None:
    # Without tls: the TLS a server offers is taken unverified: anyone can offer it, and read what is sent inside.
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.server_cert, certificates.server_key)
    server = FakeServer(greeting_plugin, switch_to, tls=context)
    try:
        dsn = f"mysql+pymysql://exporter:{PASSWORD}@127.0.0.1:{server.port}/probe"
        config = write_config(tmp_path, {"db": target(dsn, "one")}, {"one": {"one": metric("select 1 as v", "v")}})
        with client_for(config) as client:
            views = probe_views(client, "db")
    finally:
        server.close()
    assert server.connections >= 1
    assert PASSWORD.encode() not in bytes(server.received)
    assert value(views.samples, "probe_success") == 0.0
    assert REFUSED in views.debug, views.debug
    assert PASSWORD not in views.debug
