"""The release: `make dist`'s wheel, installed into a fresh virtualenv, works from any directory."""

import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.paths import ROOT_DIR

pytestmark = pytest.mark.slow  # builds and installs a wheel: about 20 s

VERSION = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["project"]["version"]
# What a fresh clone holds of the source, without the developer's caches and virtualenvs.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", ".*_cache", "build", "dist", "*.egg-info", "__pycache__")


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the virtualenv's bin folder, dist/) after building from a copy of the tree and installing the wheel."""
    base = tmp_path_factory.mktemp("release")
    source = base / "source"
    shutil.copytree(ROOT_DIR, source, ignore=_NOT_SOURCE, symlinks=True)
    built = _run(sys.executable, "-m", "build", "--outdir", base / "dist", ".", cwd=source)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    venv = base / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=base)
    assert made.returncode == 0, made.stderr
    (wheel,) = (base / "dist").glob("*.whl")
    # The runtime dependencies only, from pip's cache (make install filled it) or the package index.
    pip = _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=base)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin", base / "dist"


def test_dist_holds_a_wheel_and_an_sdist_of_the_version_in_pyproject(installed: tuple[Path, Path]) -> None:
    _, dist = installed
    assert sorted(path.name for path in dist.iterdir()) == [
        f"sqlprobe-{VERSION}-py3-none-any.whl",
        f"sqlprobe-{VERSION}.tar.gz",
    ]
    with zipfile.ZipFile(dist / f"sqlprobe-{VERSION}-py3-none-any.whl") as wheel:
        assert "app/config/queries.yml" in wheel.namelist()
        assert not [name for name in wheel.namelist() if name.startswith("tests/")]
    with tarfile.open(dist / f"sqlprobe-{VERSION}.tar.gz") as sdist:
        assert f"sqlprobe-{VERSION}/app/config/queries.yml" in sdist.getnames()


def test_installed_commands_print_the_version_and_check_a_config_from_another_directory(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, _ = installed
    version = _run(bin_dir / "sqlprobe", "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"sqlprobe {VERSION}\n")
    # Only targets.yml here: the query sets come from the library inside the installed package.
    shutil.copy(ROOT_DIR / "targets.yml", tmp_path / "targets.yml")
    check = _run(bin_dir / "sqlprobe", "--check-config", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("sqlprobe: configuration OK: 2 targets, ")
    assert "/site-packages/app/config/queries.yml)" in check.stdout
    convert = _run(bin_dir / "sqlprobe-convert", "--help", cwd=tmp_path)
    assert convert.returncode == 0, convert.stderr
    assert convert.stdout.startswith("usage: sqlprobe-convert")


def test_the_installed_release_brings_no_development_tools(installed: tuple[Path, Path]) -> None:
    bin_dir, _ = installed
    listed = _run(bin_dir / "python", "-m", "pip", "list", "--format=freeze", cwd=bin_dir)
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "sqlprobe" in names
    assert not names & {"pytest", "mypy", "ruff", "hypothesis", "schemathesis", "selenium", "build"}
