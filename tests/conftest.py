"""Fixtures: real MariaDB and PostgreSQL servers (session-wide), dead endpoints, and apps built from written configs."""

import shutil
from collections.abc import Iterator, Sequence

import pytest

from tests.helpers import missing
from tests.paths import TESTS_DIR
from tests.postgres import PostgreSQL, postgres_binaries, throwaway_postgres
from tests.servers import MariaDB, free_port, mariadb_binaries, mariadb_fleet, silent_listener


@pytest.fixture(scope="session")
def mariadb_paths() -> tuple[str, str]:
    """mariadbd and mariadb-install-db; without them the MariaDB tests fail under CI and skip elsewhere."""
    binaries = mariadb_binaries()
    if binaries is None:
        missing("MariaDB is not installed (no mariadbd / mariadb-install-db): apt-get install mariadb-server")
    return binaries


@pytest.fixture(scope="session")
def fleet(mariadb_paths: tuple[str, str]) -> Iterator[Sequence[MariaDB]]:
    """Two throwaway MariaDB servers with the test schema, data differing between them."""
    with mariadb_fleet(2, mariadb_paths) as servers:
        yield servers


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """A throwaway PostgreSQL server with the test schema; without PostgreSQL this fails under CI and skips elsewhere."""
    binaries = postgres_binaries()
    if binaries is None:
        missing("PostgreSQL is not installed (no postgres / initdb): apt-get install postgresql")
    with throwaway_postgres(binaries) as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A loopback port where connections are refused."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP and never answers."""
    with silent_listener() as port:
        yield port


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus's promtool; without it the lint tests fail under CI and skip elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        missing("promtool is not installed: apt-get install prometheus")
    return path


# The suites that serve the process, start fleets or a browser: marked slow, left out by make test-fast.
SLOW_SUITES = frozenset({"e2e", "faults", "browser", "deploy"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a slow suite ``slow``, by the folder it is in."""
    for item in items:
        if item.path.resolve().relative_to(TESTS_DIR).parts[0] in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)
