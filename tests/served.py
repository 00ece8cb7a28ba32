"""sqlprobe started as a user starts it: its own process, real configs, a free port."""

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.servers import free_port


@dataclass
class Served:
    """A running sqlprobe process and where it listens."""

    process: subprocess.Popen[str]
    url: str
    log: Path


@contextmanager
def serve(
    directory: Path,
    targets: Mapping[str, Any],
    query_sets: Mapping[str, Any],
    *options: str,
    scheme: str = "http",
    client: httpx.Client | None = None,
    modules: Mapping[str, Any] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[Served]:
    """`sqlprobe --targets … --queries … --bind … [options]` on a free port, ready to serve; killed after.

    ``client`` checks readiness where plain requests cannot (TLS with a private CA, basic auth); ``modules`` go
    into targets.yml beside the targets; ``wrapper`` is a command sqlprobe's command line is given to (unshare…).
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "targets.yml").write_text(
        yaml.safe_dump({"targets": dict(targets)} | ({"modules": modules} if modules else {}))
    )
    (directory / "queries.yml").write_text(yaml.safe_dump({"query_sets": dict(query_sets)}))
    with serve_files(directory, *options, scheme=scheme, client=client, wrapper=wrapper) as served:
        yield served


@contextmanager
def serve_files(
    directory: Path,
    *options: str,
    scheme: str = "http",
    client: httpx.Client | None = None,
    wrapper: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[Served]:
    """sqlprobe serving the targets.yml and queries.yml already in ``directory``, as ``serve`` does.

    ``port`` is where to listen (a replica started again where it was), a free one by default.
    """
    port = free_port() if port is None else port
    log = directory / "sqlprobe.log"
    command = [
        *wrapper,
        str(Path(sys.executable).parent / "sqlprobe"),
        "--targets", str(directory / "targets.yml"),
        "--queries", str(directory / "queries.yml"),
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "debug",
        *options,
    ]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            ready = httpx.get(f"{url}/-/ready") if client is None else client.get(f"{url}/-/ready")
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sqlprobe did not start:\n{log.read_text()}")
        time.sleep(0.1)
    try:
        yield Served(process, url, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
