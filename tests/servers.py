"""Real servers for the tests: throwaway MariaDB instances, a closed port, a socket that never answers."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

EXPORTER_USER = "exporter"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mariadb_binaries() -> tuple[str, str] | None:
    """Paths of mariadbd and mariadb-install-db, or None when MariaDB is not installed."""
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    installer = shutil.which("mariadb-install-db")
    return (server, installer) if server and installer else None


@dataclass
class MariaDB:
    """One throwaway MariaDB server on a free loopback port with its own data directory."""

    name: str
    root: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12))
    options: Sequence[str] = ()  # more mariadbd options, after (so overriding) the defaults
    process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The exporter user's SQLAlchemy URL (holds the password)."""
        return f"mysql+pymysql://{EXPORTER_USER}:{self.password}@127.0.0.1:{self.port}/probe"

    def install(self, installer: str) -> None:
        """Create the data directory."""
        self.root.mkdir(parents=True)
        subprocess.run(
            [
                installer,
                "--no-defaults",
                f"--datadir={self.root / 'data'}",
                # Its own temporary directory: bootstraps running at once in a shared /tmp collide on the names
                # of their temporary tables (#sql-temptable-…) and fail now and then.
                f"--tmpdir={self.root}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *self._user_option(),
            ],
            check=True,
            capture_output=True,
        )

    def start(self, server: str) -> None:
        """Start mariadbd and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={self.root / 'data'}",
                f"--port={self.port}",
                f"--tmpdir={self.root}",
                "--bind-address=127.0.0.1",
                f"--socket={self.root / 'mysql.sock'}",
                f"--pid-file={self.root / 'mysql.pid'}",
                f"--log-error={self.root / 'error.log'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                "--performance-schema=OFF",
                *self.options,
                *self._user_option(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await_server(
            f"mariadbd {self.name}", self.process, lambda: self.root_connection().close(), self.root / "error.log"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL to simulate a crash) and wait for it to exit."""
        stop_process(self.process, sig)
        self.process = None

    def root_connection(self) -> Any:
        """A root connection over TCP (root has no password on these throwaway servers)."""
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", autocommit=True)

    def exporter_connection(self) -> Any:
        """A connection as the exporter user, to compute expected values with the same SQL."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=EXPORTER_USER,
            password=self.password,
            database="probe",
            autocommit=True,
        )

    def execute(self, *statements: str) -> None:
        """Run statements as root."""
        for statement in statements:
            _rows(self.root_connection(), statement)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` run directly as the exporter user."""
        return _rows(self.exporter_connection(), sql)

    def root_query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` run as root."""
        return _rows(self.root_connection(), sql)

    def replica_status(self) -> dict[str, Any]:
        """The row of SHOW SLAVE STATUS by column name, as root; empty when replication is not configured."""
        with self.root_connection() as connection, connection.cursor(pymysql.cursors.DictCursor) as cursor:
            cursor.execute("show slave status")
            row: dict[str, Any] | None = cursor.fetchone()
            return row or {}

    def wait_until_replicating(self, timeout: float = 30) -> None:
        """Wait until both replication threads run (SHOW SLAVE STATUS says Yes twice)."""
        deadline = time.monotonic() + timeout
        while (status := self.replica_status()).get("Slave_IO_Running") != "Yes" or (
            status["Slave_SQL_Running"] != "Yes"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication on {self.name} does not run: {status}")
            time.sleep(0.05)

    def exporter_sessions(self, user: str = EXPORTER_USER) -> list[tuple[int, str, str | None]]:
        """(id, command, info) of every session of the exporter user (or ``user``) on this server."""
        return [
            (int(row[0]), str(row[1]), row[2])
            for row in self.root_query(
                f"select id, command, info from information_schema.processlist where user = '{user}'"
            )
        ]

    @staticmethod
    def _user_option() -> list[str]:
        # mariadbd refuses to run as root unless told to; CI machines run the tests as root.
        return ["--user=root"] if os.geteuid() == 0 else []


def await_server(name: str, process: subprocess.Popen[bytes], connect: Callable[[], None], log: Path) -> None:
    """Wait until ``connect`` succeeds; fail with the end of the server's ``log`` if it exits or takes a minute."""
    deadline = time.monotonic() + 60
    while True:
        try:
            connect()
            return
        except Exception:  # noqa: BLE001 - each driver refuses in its own way while the server starts
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start:\n{tail}") from None
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    """Send ``sig`` to a server still running and wait for it to exit."""
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        process.wait(60)


def _rows(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on ``connection``, close it, and return the rows."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()


def setup_schema(server: MariaDB, scale: int) -> None:
    """The exporter user, its grants, and a small table whose contents differ per server."""
    server.execute(
        f"create user '{EXPORTER_USER}'@'127.0.0.1' identified by '{server.password}'",
        f"grant select, process on *.* to '{EXPORTER_USER}'@'127.0.0.1'",
        "create database probe",
        "create table probe.items (kind varchar(20), color varchar(20), qty int, price decimal(10,2), note varchar(20))",
        "insert into probe.items values "
        + ", ".join(
            f"('{kind}', '{color}', {qty * scale}, {price * scale}, '{note}')"
            for kind, color, qty, price, note in [
                ("bolt", "red", 3, 1.25, "a"),
                ("bolt", "blue", 5, 0.75, "b"),
                ("nut", "red", 7, 0.10, "c"),
                ("washer", "grey", 11, 0.05, "d"),
            ]
        ),
    )


@contextmanager
def mariadb_fleet(count: int, binaries: tuple[str, str]) -> Iterator[Sequence[MariaDB]]:
    """Start ``count`` MariaDB servers with the test schema; stop them and remove their data after."""
    server_binary, installer = binaries
    with tempfile.TemporaryDirectory(prefix="sqlprobe-mariadb-") as tmp:
        servers = [MariaDB(f"db{index}", Path(tmp) / f"db{index}") for index in range(count)]
        try:
            for index, server in enumerate(servers):
                server.install(installer)
                server.start(server_binary)
                setup_schema(server, scale=index + 1)
            yield servers
        finally:
            for server in servers:
                server.stop()


@contextmanager
def replication_pair(binaries: tuple[str, str]) -> Iterator[tuple[MariaDB, MariaDB]]:
    """A primary with a binary log and a replica replicating from it by GTID, both with the test schema."""
    server_binary, installer = binaries
    with tempfile.TemporaryDirectory(prefix="sqlprobe-replication-") as tmp:
        primary = MariaDB(
            "primary", Path(tmp) / "primary", options=[f"--log-bin={Path(tmp) / 'primary' / 'binlog'}", "--server-id=1"]
        )
        replica = MariaDB("replica", Path(tmp) / "replica", options=["--server-id=2"])
        try:
            for server in (primary, replica):
                server.install(installer)
                server.start(server_binary)
                setup_schema(server, scale=1)
            primary.execute(
                f"create user 'replication'@'127.0.0.1' identified by '{primary.password}'",
                "grant replication slave on *.* to 'replication'@'127.0.0.1'",
            )
            # Each server has its own exporter user and schema: replicate only what the primary does from now on.
            ((position,),) = primary.root_query("select @@gtid_binlog_pos")
            replica.execute(
                f"set global gtid_slave_pos = '{position}'",
                f"change master to master_host = '127.0.0.1', master_port = {primary.port}, "
                f"master_user = 'replication', master_password = '{primary.password}', master_use_gtid = slave_pos",
                "start slave",
            )
            replica.wait_until_replicating()
            yield primary, replica
        finally:
            for server in (replica, primary):
                server.stop()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(socket.SOMAXCONN)  # a thousand connections at once are all accepted, none of their SYNs dropped
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                held.append(connection)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@contextmanager
def unanswered_syn_port() -> Iterator[int]:
    """A loopback port where a SYN is never answered, as at a host that is down or behind a dropping firewall.

    Linux drops every SYN that reaches a listener whose accept queue is full, syncookies or not (no RST, no
    SYN-ACK: the ListenOverflows counter); a queue of length 0 is full with one connection never accepted. The
    connecting side stays in SYN-SENT and retransmits until it gives up. Nothing outside this process is changed:
    no firewall rule, no route, no namespace to remove after.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            with socket.socket() as check:
                check.settimeout(0.3)
                try:
                    check.connect(("127.0.0.1", port))
                except TimeoutError:
                    pass
                else:
                    raise RuntimeError(f"port {port} answered a SYN although its accept queue is full")
            yield port


class LoopbackServer:
    """A server on a free loopback port that handles each connection on a thread of its own (``handle``), until
    closed. A subclass sets its own state first, then calls this __init__, which starts accepting."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._listener.accept()
                threading.Thread(target=self.handle, args=(connection,), daemon=True).start()


class Relay(LoopbackServer):
    """Loopback TCP to a server's ``upstream`` port: each client connection gets its own upstream connection, and
    ``relay`` passes bytes between the two as the fault wants; close() shuts every socket down."""

    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self._sockets: list[socket.socket] = []
        super().__init__()

    def close(self) -> None:
        super().close()
        for sock in self._sockets:
            # Shut down first: close() alone leaves the connection open while a pump thread waits in recv().
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def handle(self, connection: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream))
        self._sockets += [connection, upstream]
        self.relay(connection, upstream)

    def relay(self, client: socket.socket, server: socket.socket) -> None:
        """Pass bytes between ``client`` and ``server`` (on this connection's thread) until either ends."""
        raise NotImplementedError
