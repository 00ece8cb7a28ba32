"""RSS of a served sqlprobe before and after bursts of huge results and reloads (docs/limits.md, Memory).

    .venv/bin/python -m tests.bench.memory [--reloads 10]

Starts a throwaway MariaDB and sqlprobe as a user starts it, records RSS at start, after 5 targets ran
`select ... from seq_1_to_2000000` (max_rows 1000) twice each, 5 at a time, and after reloads of a 5,005-target
targets.yml with one label changed each time.
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml

from tests.servers import free_port, mariadb_binaries, mariadb_fleet

HUGE = "select seq as i, seq * 2 as v from seq_1_to_2000000"
MiB = 1024 * 1024


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024 // MiB


async def _bursts(url: str, targets: list[str], rounds: int) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        for _ in range(rounds):
            await asyncio.gather(*(client.get(f"{url}/probe", params={"target": name}) for name in targets))


def main() -> None:
    """Print the RSS figures, in MiB."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reloads", type=int, default=10)
    args = parser.parse_args()
    binaries = mariadb_binaries()
    if binaries is None:
        sys.exit("needs mariadbd and mariadb-install-db")
    with mariadb_fleet(1, binaries) as fleet, tempfile.TemporaryDirectory() as tmp:
        directory, server = Path(tmp), fleet[0]
        metric = {"query": HUGE, "type": "gauge", "description": "d", "labels": ["i"], "value": "v", "max_rows": 1000}
        huge = [f"huge{i}" for i in range(5)]
        targets: dict[str, Any] = {
            name: {"dsn": server.dsn, "query_sets": ["huge"], "timeout": "120s"} for name in huge
        }
        targets |= {f"x{i}": {"dsn": server.dsn, "query_sets": ["huge"]} for i in range(5000)}
        (directory / "queries.yml").write_text(yaml.safe_dump({"query_sets": {"huge": {"huge": metric}}}))
        (directory / "targets.yml").write_text(yaml.safe_dump({"targets": targets}))
        url = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "app", "--log-level", "warning", "--bind", url.removeprefix("http://")]
        files = ["--targets", str(directory / "targets.yml"), "--queries", str(directory / "queries.yml")]
        process = subprocess.Popen([*command, *files])
        try:
            while not _ready(url):
                time.sleep(0.2)
            start = _rss(process.pid)
            asyncio.run(_bursts(url, huge, 2))
            after_bursts = _rss(process.pid)
            for count in range(args.reloads):
                targets["x0"]["labels"] = {"n": str(count)}
                (directory / "targets.yml").write_text(yaml.safe_dump({"targets": targets}))
                httpx.post(f"{url}/-/reload", timeout=300)
            after_reloads = _rss(process.pid)
        finally:
            process.kill()
            process.wait()
    print(f"RSS MiB: start {start}, after huge results {after_bursts}, after {args.reloads} reloads {after_reloads}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready").status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
