"""Images made offline for the deployment tests: a Debian base with Python built by mmdebstrap, imported into podman.

No image registry is reachable here, so the Containerfile's BASE is this image instead of python:3.11-slim: Debian
bookworm's python3 (3.11), python3-venv and ca-certificates. The tarball is cached under /var/tmp between runs.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.helpers import missing
from tests.paths import TESTS_DIR

CACHE = Path(os.environ.get("SQLPROBE_IMAGE_CACHE", "/var/tmp/sqlprobe-images"))
BASE_IMAGE = "localhost/sqlprobe-test-base:bookworm"
CONTAINERS_CONF = TESTS_DIR / "deploy" / "containers.conf"
# A host's CA bundle, mounted read-only into the build for pip (it adds no layer).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

_MMDEBSTRAP = [
    "mmdebstrap",
    "--variant=minbase",
    "--mode=root",
    "--format=tar",
    "--include=python3,python3-venv,ca-certificates",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    *(
        f"--dpkgopt=path-exclude=/usr/share/{folder}/*"
        for folder in ("man", "locale", "doc", "info", "lintian", "linda")
    ),
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--aptopt=Apt::Install-Recommends false",
    "bookworm",
]


def podman_env() -> dict[str, str]:
    """The environment for podman here: runc and ulimits it may set (tests/deploy/containers.conf)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; on failure with ``check``, raise with its output."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def require_tools() -> None:
    """podman, runc and mmdebstrap, as root (mmdebstrap --mode=root; podman's rootful storage)."""
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            missing(f"{tool} is not installed (apt-get install podman runc mmdebstrap)")
    if os.geteuid() != 0:
        missing("the container tests build a base image with mmdebstrap --mode=root: run them as root")


def base_image() -> str:
    """The Debian + python3 base image, made once (about 20 s) and cached as a tarball and in podman's storage."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = CACHE / "bookworm-python3.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        made = subprocess.run([*_MMDEBSTRAP, str(partial)], capture_output=True, text=True, timeout=600, check=False)
        if made.returncode != 0:
            raise AssertionError(f"mmdebstrap failed:\n{made.stderr[-3000:]}")
        partial.rename(tarball)
    podman("import", "--change", "CMD=/bin/bash", str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def build_image(tag: str, context: Path) -> float:
    """Build the Containerfile of ``context`` on the offline base as ``tag``; the build's wall time in seconds."""
    started = time.monotonic()
    podman(
        "build",
        "--format=docker",
        "--network=host",
        "--build-arg",
        f"BASE={base_image()}",
        "--build-arg",
        "VERSION=test",
        "--volume",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--tag",
        tag,
        "--file",
        str(context / "Containerfile"),
        str(context),
        timeout=900,
    )
    return time.monotonic() - started
