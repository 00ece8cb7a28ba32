"""The Containerfile's image, built offline on a Debian base made by mmdebstrap and run as docs/deployment.md says:
read-only, every capability dropped, a non-root user, configuration and password files mounted at /etc/sqlprobe/."""

import os
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.deploy.images import BASE_IMAGE, build_image, podman, require_tools
from tests.helpers import parse_samples, value
from tests.paths import ROOT_DIR
from tests.servers import EXPORTER_USER, MariaDB, free_port

# A tag of this run's own: test runs from several checkouts at once must not run each other's images.
TAG = f"localhost/sqlprobe:deploy-test-{os.getpid()}"
UID = 65532
MiB = 2**20


def _size(image: str) -> int:
    return int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_tools()
    seconds = build_image(TAG, ROOT_DIR)
    print(f"\nimage {TAG}: built in {seconds:.1f} s, {_size(TAG) / MiB:.1f} MiB")
    try:
        yield TAG
    finally:
        podman("rmi", TAG, check=False)  # the tag only: the layers stay cached for the next build


# Every compiled module of the virtualenv (but packages' own tests), imported: stripping them (Containerfile) left them loadable.
IMPORT_EVERY_EXTENSION = """
import importlib, pathlib, sys
import psycopg  # before psycopg_binary, which refuses to be imported first
site = pathlib.Path(sys.prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
names = sorted(".".join(p.relative_to(site).with_suffix("").with_suffix("").parts) for p in site.rglob("*.so"))
for name in names:
    if ".tests." not in name:  # greenlet's own test helpers need its test dependencies
        importlib.import_module(name)
print(len(names), psycopg.pq.__impl__)
"""


def test_the_image_is_under_200_mib_and_every_stripped_extension_module_loads(image: str) -> None:
    size, base = _size(image), _size(BASE_IMAGE)
    print(f"\nimage {size / MiB:.1f} MiB: base {base / MiB:.1f} MiB, sqlprobe's layers {(size - base) / MiB:.1f} MiB")
    imported = podman("run", "--rm", "--network=none", "--entrypoint", "python3", image, "-c", IMPORT_EVERY_EXTENSION)
    assert size < 200 * MiB
    count, psycopg_implementation = imported.stdout.split()
    assert int(count) >= 10  # uvloop, httptools, pydantic_core, cryptography, sqlalchemy's, yaml's…
    assert psycopg_implementation == "binary"


def _config_dir(directory: Path, server: MariaDB) -> Path:
    """targets.yml and the password file as an operator mounts them; no queries.yml: the shipped library serves."""
    config = directory / "sqlprobe"
    (config / "secrets").mkdir(parents=True)
    (config / "secrets" / "db_password").write_text(server.password + "\n")
    (config / "targets.yml").write_text(
        "targets:\n"
        "  db:\n"
        f"    dsn: mysql+pymysql://{EXPORTER_USER}@127.0.0.1:{server.port}/\n"
        "    password_file: /etc/sqlprobe/secrets/db_password\n"
        "    query_sets: [mysql_overview]\n"
    )
    for path in (config, config / "secrets"):
        path.chmod(0o755)
    for path in (config / "targets.yml", config / "secrets" / "db_password"):
        path.chmod(0o644)
    return config


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.fixture
def container(image: str, fleet: Sequence[MariaDB], tmp_path: Path) -> Iterator[tuple[str, int, float]]:
    """(name, port, seconds until /-/healthy answered) of the image run read-only with all capabilities dropped."""
    name = f"sqlprobe-test-{tmp_path.name[-20:]}".replace("_", "-")
    port = free_port()
    config = _config_dir(tmp_path, fleet[0])
    started = time.monotonic()
    podman(
        "run", "--detach", "--name", name, "--read-only", "--cap-drop=all", "--network=host",
        "--user", f"{UID}:{UID}", "--volume", f"{config}:/etc/sqlprobe:ro",
        "--env", f"SQLPROBE_HEALTHCHECK_URL=http://127.0.0.1:{port}/-/healthy",
        image, "--bind", f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        deadline = started + 30
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/-/healthy")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    logs = podman("logs", name, check=False)
                    raise AssertionError(f"no answer within 30 s:\n{logs.stdout}{logs.stderr}") from None
                time.sleep(0.05)
        yield name, port, time.monotonic() - started
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def test_the_image_probes_a_mariadb_read_only_without_capabilities_as_a_non_root_user(
    container: tuple[str, int, float], fleet: Sequence[MariaDB]
) -> None:
    name, port, ready = container
    print(f"\ncontainer answered /-/healthy {ready:.2f} s after podman run")
    status, body = _get(f"http://127.0.0.1:{port}/probe?target=db")
    samples = parse_samples(body)
    assert status == 200
    assert value(samples, "probe_success") == 1.0
    # mysql_up is 'select 1 as up' from the shipped library inside the package.
    assert value(samples, "query_exporter_mysql_up") == fleet[0].query("select 1 as up")[0][0]
    uid = podman("exec", name, "python3", "-c", "import os; print(os.getuid(), os.getgid())").stdout.split()
    assert uid == [str(UID), str(UID)]
    effective = podman("exec", name, "grep", "^CapEff", "/proc/1/status").stdout.split()
    assert effective == ["CapEff:", "0000000000000000"]
    # Nothing written to the root filesystem: the only change is podman's own mount points (hosts, resolv.conf).
    assert set(podman("diff", name).stdout.split("\n")) - {"C /etc", ""} == set()
    assert podman("healthcheck", "run", name, check=False).returncode == 0


def test_podman_stop_ends_the_container_gracefully_within_seconds(container: tuple[str, int, float]) -> None:
    name, _, _ = container
    started = time.monotonic()
    podman("stop", "--time", "10", name)
    stopped = time.monotonic() - started
    print(f"\npodman stop returned after {stopped:.2f} s")
    assert stopped < 5
    assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
