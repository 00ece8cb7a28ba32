"""docs/quickstart-mysql.md followed as written, on a fresh MariaDB, gets its `local` target to success.

Nothing here reads the files a user is told to edit (targets.yml, queries.yml): the target is the doc's, the queries
the package's own.
"""

import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import httpx2 as httpx
import pytest

from app.drivers.engine_cache import MAX_OVERFLOW, POOL_SIZE
from tests.helpers import parse_samples, value
from tests.paths import ROOT_DIR
from tests.served import serve_files
from tests.servers import MariaDB

ROOT = ROOT_DIR
QUICKSTART = ROOT / "docs" / "quickstart-mysql.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", QUICKSTART.read_text(), flags=re.S)


@pytest.fixture
def fresh(mariadb_paths: tuple[str, str]) -> Iterator[MariaDB]:
    """A MariaDB as a fresh install leaves it: with its test database and anonymous users, resolving client names."""
    server_binary, installer = mariadb_paths
    with tempfile.TemporaryDirectory(prefix="sqlprobe-fresh-") as tmp:
        server = MariaDB("fresh", Path(tmp) / "fresh", options=("--skip-name-resolve=OFF",))
        server.root.mkdir(parents=True)
        install = [installer, "--no-defaults", f"--datadir={server.root / 'data'}"]
        subprocess.run(
            [*install, "--auth-root-authentication-method=normal", *server._user_option()],
            check=True,
            capture_output=True,
        )
        server.start(server_binary)
        try:
            yield server
        finally:
            server.stop()


def test_the_quickstart_sql_and_password_give_probe_success_1_on_a_fresh_mariadb(
    tmp_path: Path, fresh: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fresh.root_query("select count(*) from mysql.user where user = ''")[0][0] > 0, "no anonymous user"
    password = "pw-" + secrets.token_hex(8)
    # Step 1: the doc's SQL, as an administrator, with a password of our own.
    (create_user,) = [block for block in _blocks("sql") if "CREATE USER" in block]
    statements = [line for line in create_user.replace("change-me", password).splitlines() if line.strip()]
    fresh.execute(*statements)
    # Step 2: the password exported as the doc says; the shipped files, with the throwaway server's port.
    (export,) = [line for block in _blocks("sh") for line in block.splitlines() if line.startswith("export ")]
    name, _ = export.removeprefix("export ").split("=", 1)
    monkeypatch.setenv(name, password)
    # The target as the doc shows it, on the throwaway server's port, and the query library inside the package: not
    # the checkout's targets.yml and queries.yml, which the user is told to edit.
    (target_block,) = _blocks("yaml")
    assert "@127.0.0.1:3306/" in target_block
    (tmp_path / "targets.yml").write_text(target_block.replace("@127.0.0.1:3306/", f"@127.0.0.1:{fresh.port}/"))
    (tmp_path / "queries.yml").write_text(files("app.config").joinpath("queries.yml").read_text())
    with serve_files(tmp_path) as served:
        # Step 3.
        response = httpx.get(f"{served.url}/probe", params={"target": "local"}, timeout=30)
    samples = parse_samples(response.text)
    assert value(samples, "probe_success") == 1.0, response.text


def test_the_quickstart_connection_figures_are_the_pool_settings() -> None:
    text = QUICKSTART.read_text()
    assert f"**{POOL_SIZE} connections** stay open" in text
    assert f"**Up to {POOL_SIZE + MAX_OVERFLOW} connections** at once" in text
    per_target = POOL_SIZE + MAX_OVERFLOW + 1  # and one for KILL QUERY
    assert f"one target needs at most **{per_target}** connections" in text
    assert f"WITH MAX_USER_CONNECTIONS {per_target};" in text
    assert f"Set the\nlimit to `{per_target} × targets × instances`" in text  # noqa: RUF001


def test_the_readmes_sqlprobe_commands_run_as_written_after_activating_the_venv() -> None:
    (block,) = [block for block in _blocks("sh") if ". .venv/bin/activate" in block]
    result = subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "MYSQL_EXPORTER_PASSWORD": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sqlprobe: configuration OK: ")
