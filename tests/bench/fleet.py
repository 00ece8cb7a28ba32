"""The bench's fleet: throwaway MariaDB servers, a database user per target, and sqlprobe serving them."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers import MariaDB, free_port, mariadb_binaries, setup_schema, stop_process

QUERY_SET = "bench"
# Three small, distinct SQL texts per probe, as the shipped mysql_overview and processlist sets run them.
QUERIES: Mapping[str, Any] = {
    "mysql_up": {
        "query": "select 1 as up",
        "type": "gauge",
        "description": "1 when the server answers a query",
        "value": "up",
    },
    "mysql_uptime_seconds": {
        "query": "show global status like 'Uptime'",
        "type": "gauge",
        "description": "seconds since the server started",
        "value": "value",
    },
    "mysql_sessions_by_command": {
        "query": "select command, count(*) sessions from information_schema.processlist group by command",
        "type": "gauge",
        "description": "sessions by command",
        "labels": ["command"],
        "value": "sessions",
    },
}
QUERIES_PER_PROBE = len(QUERIES)
# sqlprobe's engines hold at most pool_size + max_overflow connections per target (app/drivers/engine_cache.py: 2 + 2).
CONNECTIONS_PER_TARGET = 4
# Sessions per server the bench aims at when not told how many servers: every probe's processlist query reads all
# of its server's sessions (a real target has a handful), so 2,500 per server (10,000 targets on 4) made MariaDB,
# not the exporter, the bottleneck.
SESSIONS_PER_SERVER = 250
# Users created by one CREATE USER statement while the fleet is set up (10,000 targets: 10,000 or 20,000 users).
USERS_PER_STATEMENT = 500


@dataclass(frozen=True)
class Exporter:
    """The running sqlprobe process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    dsns: Mapping[str, str]  # by target name

    @property
    def targets(self) -> Sequence[str]:
        """The names of the targets it serves."""
        return list(self.dsns)


def target_name(index: int) -> str:
    """The name of the ``index``-th target."""
    return f"t{index:04d}"


def go_user(target: str) -> str:
    """The database user the Go comparison logs in as for ``target`` (sqlprobe's user is the target's name)."""
    return "g" + target[1:]


@contextmanager
def database_fleet(
    servers: int, targets: int, root: Path, users_per_target: int = 1
) -> Iterator[tuple[Sequence[MariaDB], dict[str, str]]]:
    """``servers`` MariaDB servers with one user per target (targets dealt round-robin); yields them and the DSNs.

    With ``users_per_target`` 2, each target has a second user (``g…``, for the Go comparison), and the servers
    count statements per user (``--userstat``).
    """
    binaries = mariadb_binaries()
    if binaries is None:
        sys.exit("bench: MariaDB is not installed (no mariadbd / mariadb-install-db): apt-get install mariadb-server")
    server_binary, installer = binaries
    per_server = -(-targets // servers)
    options = server_options(per_server * (CONNECTIONS_PER_TARGET + users_per_target - 1))
    if users_per_target > 1:
        options.append("--userstat=1")
    fleet = [
        MariaDB(f"db{index}", root / f"db{index}", options=[*options, f"--tmpdir={root / f'tmp{index}'}"])
        for index in range(servers)
    ]

    def start(index: int) -> None:
        server = fleet[index]
        server.start(server_binary)
        setup_schema(server, scale=index + 1)
        names = [target_name(number) for number in range(index, targets, servers)]
        users = [*names, *map(go_user, names)] if users_per_target > 1 else names
        connection = server.root_connection()
        password = connection.escape(server.password)
        try:
            with connection.cursor() as cursor:
                for start in range(0, len(users), USERS_PER_STATEMENT):
                    chunk = [f"'{user}'@'127.0.0.1'" for user in users[start : start + USERS_PER_STATEMENT]]
                    cursor.execute(f"create user {', '.join(f'{u} identified by {password}' for u in chunk)}")
                    cursor.execute(f"grant select, process on *.* to {', '.join(chunk)}")
        finally:
            connection.close()

    try:
        _install(fleet[0], installer, root / "tmp0")
        for index, server in enumerate(fleet[1:], start=1):  # a copy of the first one's: seconds, not minutes
            (root / f"tmp{index}").mkdir()
            shutil.copytree(fleet[0].root / "data", server.root / "data", symlinks=True)
        with ThreadPoolExecutor(min(servers, 16)) as pool:
            list(pool.map(start, range(servers)))
        dsns = {}
        for number in range(targets):
            server = fleet[number % servers]
            name = target_name(number)
            dsns[name] = f"mysql+pymysql://{name}:{server.password}@127.0.0.1:{server.port}/probe"
        yield fleet, dsns
    finally:
        for server in fleet:
            server.stop()


def default_servers(targets: int) -> int:
    """How many servers a fleet of ``targets`` gets unless told: 4, or more to keep ``SESSIONS_PER_SERVER``."""
    return max(4, -(-targets // SESSIONS_PER_SERVER))


def server_options(connections: int) -> list[str]:
    """mariadbd's options for a bench server that holds up to ``connections`` exporters' sessions.

    The thread pool runs thousands of sessions on a few threads, where one thread per connection would be 2,500
    threads per server at 10,000 targets on 4 servers; its queue takes the bursts of connections at start.
    """
    return [
        f"--max-connections={connections + 100}",
        "--max-connect-errors=1000000",
        "--thread-handling=pool-of-threads",
        f"--open-files-limit={connections + 1000}",
        f"--back-log={min(connections, 4096)}",
    ]


def _install(server: MariaDB, installer: str, tmpdir: Path) -> None:
    """Create the server's data directory, with temporary files of its own.

    Servers sharing /tmp collide on their temporary tables' names now and then ("Unknown table
    'mysql.tmp_user_sys'" while installing), so each gets its own directory, passed to mariadb-install-db
    through TMPDIR, one install at a time since the environment is the process's.
    """
    tmpdir.mkdir()
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmpdir)
    try:
        server.install(installer)
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved


@contextmanager
def exporter(
    directory: Path, dsns: Mapping[str, str], options: Sequence[str], wrapper: Sequence[str] = (), start_s: float = 60
) -> Iterator[Exporter]:
    """`sqlprobe --targets … --queries … --bind …` as a user starts it (after ``wrapper``: valgrind, say), ready to
    serve within ``start_s`` seconds; stopped after."""
    targets_file, queries_file = directory / "targets.yml", directory / "queries.yml"
    targets_file.write_text(
        yaml.safe_dump(
            {
                "defaults": {"query_sets": [QUERY_SET], "timeout": "10s"},
                "targets": {n: {"dsn": d} for n, d in dsns.items()},
            }
        )
    )
    queries_file.write_text(yaml.safe_dump({"query_sets": {QUERY_SET: dict(QUERIES)}}))
    host, port = "127.0.0.1", free_port()
    log = directory / "sqlprobe.log"
    command = [
        *wrapper,
        str(Path(sys.executable).parent / "sqlprobe"),
        "--targets", str(targets_file),
        "--queries", str(queries_file),
        "--bind", f"{host}:{port}",
        "--log-level", "warning",
        *options,
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_s
        while not _ready(f"http://{host}:{port}/-/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: sqlprobe did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield Exporter(process, host, port, dsns)
    finally:
        stop_process(process, signal.SIGTERM)
        if process.poll() is None:
            process.kill()
        tail = log.read_text(errors="replace").strip()
        if tail:
            print(f"sqlprobe's log (warnings and errors), last lines:\n{tail[-2000:]}", file=sys.stderr)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def bench_setup(
    servers: int, targets: int, options: Sequence[str], users_per_target: int = 1
) -> Iterator[tuple[Exporter, Sequence[MariaDB], Path]]:
    """The whole fleet and sqlprobe in a temporary directory (yielded too), removed after."""
    _raise_open_files(targets * (CONNECTIONS_PER_TARGET + users_per_target) + 10_000)
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlprobe-bench-")))
        fleet, dsns = stack.enter_context(database_fleet(servers, targets, root, users_per_target))
        running = stack.enter_context(exporter(root, dsns, options))
        yield running, fleet, root


def _raise_open_files(wanted: int) -> None:
    """Raise this process's open-file limits towards ``wanted``, for the servers and exporters it starts to inherit.

    sqlprobe may hold 4 connections per target (and warns when its limit is below that); the Go exporter one; a
    server one per session. Raising the hard limit needs root (CAP_SYS_RESOURCE); without it the bench goes on with
    the limit it has.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
    target = min(max(wanted, soft), ceiling)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
