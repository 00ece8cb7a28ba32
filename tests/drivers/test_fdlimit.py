"""File descriptors: the soft limit is raised to the hard one at start, and a config that could need more is named."""

import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.helpers import metric, target
from tests.servers import free_port

SETS = {"query_sets": {"one": {"one": metric("select 1 as v", "v")}}}


def _files(directory: Path, count: int) -> list[str]:
    (directory / "targets.yml").write_text(
        yaml.safe_dump({"targets": {f"t{i}": target(f"sqlite:///{directory}/db.sqlite", "one") for i in range(count)}})
    )
    (directory / "queries.yml").write_text(yaml.safe_dump(SETS))
    return ["--targets", str(directory / "targets.yml"), "--queries", str(directory / "queries.yml")]


def _limited(soft: int, hard: int) -> Callable[[], None]:
    """For preexec_fn: the child starts with these RLIMIT_NOFILE limits, as under a service manager."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_check_config_warns_when_the_targets_pools_could_need_more_descriptors_than_the_hard_limit(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "app", "--check-config", "--max-connections", "100", *_files(tmp_path, 200)]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limited(256, 512), check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("sqlprobe: configuration OK: 200 targets, 1 query sets (")
    assert result.stderr.startswith(
        "sqlprobe: warning: 200 targets could hold 800 connections (4 per target), plus 100 HTTP connections "
        "(--max-connections) and 64 of sqlprobe's own: 964 file descriptors, more than the limit of 512;"
    )
    roomy = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limited(256, 4096), check=False)
    assert (roomy.returncode, roomy.stderr) == (0, "")


def test_the_served_process_raises_its_soft_descriptor_limit_to_the_hard_one_and_logs_both(tmp_path: Path) -> None:
    log = tmp_path / "sqlprobe.log"
    command = [sys.executable, "-m", "app", *_files(tmp_path, 2), "--bind", f"127.0.0.1:{free_port()}"]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_limited(256, 4096))
    try:
        deadline = time.monotonic() + 30
        while "file descriptors" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
    finally:
        process.kill()
        process.wait()
    assert "file descriptors: soft limit 4096 (was 256), hard limit 4096" in log.read_text()
    assert next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5] == [
        "4096",
        "4096",
    ]
