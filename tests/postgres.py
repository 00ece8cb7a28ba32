"""A throwaway PostgreSQL server for the tests: initdb into a temporary directory, postgres on a free loopback port."""

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.servers import EXPORTER_USER, await_server, free_port, stop_process

SUPERUSER = "postgres"
DATABASE = "probe"
# initdb and postgres refuse to run as root; CI machines run the tests as root.
SYSTEM_USER = "postgres"
ITEMS = [("bolt", "red", 3, 1.25), ("bolt", "blue", 5, 0.75), ("nut", "red", 7, 0.10), ("washer", "grey", 11, 0.05)]


def postgres_binaries() -> tuple[str, str] | None:
    """Paths of postgres and initdb (from PATH, else the newest Debian install), or None when not installed."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: [int(n) for n in re.findall(r"\d+", path)])
    for directory in [None, *reversed(debian)]:
        server, initdb = shutil.which("postgres", path=directory), shutil.which("initdb", path=directory)
        if server and initdb:
            return server, initdb
    return None


@dataclass
class PostgreSQL:
    """One throwaway PostgreSQL server: data and unix socket under ``root``, TCP on a free loopback port."""

    root: Path
    binaries: tuple[str, str]
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(12))
    process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The exporter user's SQLAlchemy URL (holds the password)."""
        return f"postgresql+psycopg://{EXPORTER_USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def install(self) -> None:
        """Create the data directory: the superuser may connect over the unix socket, others need a password."""
        self._run_as_owner(
            [
                self.binaries[1],
                f"--pgdata={self.root / 'data'}",
                f"--username={SUPERUSER}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )

    def start(self) -> None:
        """Start postgres and wait until it accepts connections."""
        log = self.root / "server.log"
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    self.binaries[0],
                    f"-D{self.root / 'data'}",
                    f"-p{self.port}",
                    "-clisten_addresses=127.0.0.1",
                    f"-cunix_socket_directories={self.root}",
                    "-cfsync=off",
                    "-cmax_connections=30",
                ],
                stdout=output,
                stderr=output,
                cwd=self.root,
                **self._owner(),
            )
        await_server("postgres", self.process, lambda: self.superuser_connection("postgres").close(), log)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop the server (SIGINT: fast shutdown, which disconnects every client) and wait for it to exit."""
        stop_process(self.process, sig)
        self.process = None

    def superuser_connection(self, database: str = DATABASE) -> psycopg.Connection[Any]:
        """An autocommit superuser connection over the unix socket."""
        return psycopg.connect(host=str(self.root), port=self.port, user=SUPERUSER, dbname=database, autocommit=True)

    def exporter_connection(self) -> psycopg.Connection[Any]:
        """A connection as the exporter user over TCP, as sqlprobe's but not read-only."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=EXPORTER_USER, password=self.password, dbname=DATABASE
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` run directly as the exporter user, to compute expected values with the same SQL."""
        with self.exporter_connection() as connection:
            return connection.execute(sql).fetchall()

    def superuser_query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` run as the superuser."""
        with self.superuser_connection() as connection:
            return connection.execute(sql).fetchall()

    def exporter_sessions(self) -> list[tuple[str | None, str]]:
        """(state, last statement) of every session of the exporter user on this server."""
        rows = self.superuser_query(f"select state, query from pg_stat_activity where usename = '{EXPORTER_USER}'")
        return [(row[0], row[1]) for row in rows]

    def create_schema(self) -> None:
        """The exporter user (in pg_monitor) and a small table it may read and, to prove read-only, write."""
        with self.superuser_connection("postgres") as connection:
            connection.execute(f"create database {DATABASE}")
            connection.execute(f"create role {EXPORTER_USER} login password '{self.password}' in role pg_monitor")
        with self.superuser_connection() as connection:
            connection.execute("create table items (kind text, color text, qty int, price numeric(10, 2))")
            connection.cursor().executemany("insert into items values (%s, %s, %s, %s)", ITEMS)
            # Write grants too: only the exporter's read-only sessions may stop it from writing.
            connection.execute(f"grant select, insert, delete on items to {EXPORTER_USER}")

    def _owner(self) -> dict[str, Any]:
        """Popen arguments that run a child as the system user postgres when we are root."""
        if os.geteuid() != 0:
            return {}
        return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid, "extra_groups": []}

    def _run_as_owner(self, command: list[str]) -> None:
        result = subprocess.run(command, capture_output=True, cwd=self.root, check=False, **self._owner())
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{result.stderr.decode(errors='replace')[-2000:]}")


@contextmanager
def throwaway_postgres(binaries: tuple[str, str]) -> Iterator[PostgreSQL]:
    """Start a PostgreSQL server with the test schema; stop it and remove its data after."""
    with tempfile.TemporaryDirectory(prefix="sqlprobe-postgres-") as tmp:
        if os.geteuid() == 0:
            shutil.chown(tmp, SYSTEM_USER, pwd.getpwnam(SYSTEM_USER).pw_gid)
        server = PostgreSQL(Path(tmp), binaries)
        try:
            server.install()
            server.start()
            server.create_schema()
            yield server
        finally:
            server.stop()
