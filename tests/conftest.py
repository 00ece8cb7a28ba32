"""Fixtures: real MariaDB and PostgreSQL servers (session-wide), dead endpoints, and apps built from written configs."""

import os
import shutil
from collections.abc import Iterator, Sequence
from typing import NoReturn

import pytest

from tests.browser import chromium_paths
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


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    """Debian's chromium and chromedriver; without them the browser tests fail under CI and skip elsewhere."""
    paths = chromium_paths()
    if paths is None:
        missing("Chromium is not installed (no chromium / chromedriver): apt-get install chromium chromium-driver")
    return paths


def missing(reason: str) -> NoReturn:
    """A tool the tests need is absent: fail under CI, skip loudly elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(f"SKIPPED, NOT PASSED: {reason}")
