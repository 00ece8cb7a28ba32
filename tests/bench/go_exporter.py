"""The comparison: Debian's prometheus-sql-exporter (justwatchcom/sql_exporter, Go) on the bench's fleet.

`make bench BENCH_ARGS=--go` installs it with apt-get when it is missing (it is never a dependency of sqlprobe) and
runs it beside sqlprobe on the same MariaDB servers: one connection per target, as a database user of its own on
the target's server (so MariaDB counts its statements apart from sqlprobe's), the same 3 queries at the same
interval. It runs them on its own schedule (all targets at once, then a pause of one interval), so the bench counts
what it executed from MariaDB's per-user statistics rather than from requests it made.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.client import Connection
from tests.bench.figures import per
from tests.bench.fleet import QUERIES, QUERIES_PER_PROBE, go_user
from tests.servers import MariaDB, free_port, stop_process

PACKAGE = "prometheus-sql-exporter"
SELECTS_PER_PROBE = sum(1 for spec in QUERIES.values() if spec["query"].startswith("select"))
# Its columns by name, as MariaDB spells them in the answer (it looks them up case-sensitively).
VALUES: Mapping[str, tuple[Sequence[str], Sequence[str]]] = {
    "mysql_up": ([], ["up"]),
    "mysql_uptime_seconds": ([], ["Value"]),
    "mysql_sessions_by_command": (["command"], ["sessions"]),
}


@dataclass(frozen=True)
class GoExporter:
    """The running sql_exporter process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path


def installed() -> str | None:
    """The exporter's binary, installed with apt-get if it is missing; None (said on stderr) if it cannot be."""
    if binary := shutil.which(PACKAGE):
        return binary
    print(f"bench: installing {PACKAGE} (the Go comparison) with apt-get ...", file=sys.stderr)
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE],
            check=True,
            capture_output=True,
            env=environment,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as error:
        reason = getattr(error, "stderr", b"") or str(error).encode()
        print(f"bench: cannot install {PACKAGE}, going on without Go: {reason.decode()[-500:]}", file=sys.stderr)
        return None
    return shutil.which(PACKAGE)


def config(connections: Sequence[str], interval: float) -> str:
    """Its config: one job, every target's connection, the bench's 3 queries every ``interval``."""
    queries = [
        {
            "name": name,
            "help": spec["description"],
            "labels": list(VALUES[name][0]),
            "values": list(VALUES[name][1]),
            "query": spec["query"],
        }
        for name, spec in QUERIES.items()
    ]
    job = {"name": "bench", "interval": f"{interval:g}s", "connections": list(connections), "queries": queries}
    return yaml.safe_dump({"jobs": [job]})


def connections(servers: Sequence[MariaDB], targets: Sequence[str]) -> list[str]:
    """Its DSNs (go-sql-driver's form), targets dealt over the servers as the fleet deals them."""
    return [
        f"mysql://{go_user(name)}:{servers[number % len(servers)].password}"
        f"@tcp(127.0.0.1:{servers[number % len(servers)].port})/probe"
        for number, name in enumerate(targets)
    ]


@contextmanager
def go_exporter(
    binary: str, directory: Path, servers: Sequence[MariaDB], targets: Sequence[str], interval: float
) -> Iterator[GoExporter]:
    """The Go exporter serving the fleet, started and answering /healthz; stopped after."""
    config_file, log = directory / "sql_exporter.yml", directory / "sql_exporter.log"
    config_file.write_text(config(connections(servers, targets), interval))
    host, port = "127.0.0.1", free_port()
    command = [binary, f"-config.file={config_file}", f"-web.listen-address={host}:{port}"]
    with log.open("wb") as output:
        # warn: its failures only; at info and below it logs every run, which would count in its CPU.
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=os.environ | {"LOGLEVEL": "warn"}
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://{host}:{port}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: {PACKAGE} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield GoExporter(process, host, port, log)
    finally:
        stop_process(process, signal.SIGTERM)
        tail = log.read_text(errors="replace").strip()
        if tail:
            print(f"{PACKAGE}'s log (warnings and errors), last lines:\n{tail[-2000:]}", file=sys.stderr)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def queries_by_user(servers: Sequence[MariaDB]) -> dict[str, float]:
    """The bench's queries each exporter's users ran so far, summed over the servers: {"t": sqlprobe's, "g": Go's}.

    From MariaDB's per-user statistics (`--userstat`), whose SELECT_COMMANDS count the selects: 2 of the bench's 3
    queries (its `show global status` counts nowhere there), hence the ratio.
    """
    counts = {"t": 0.0, "g": 0.0}
    for server in servers:
        connection = server.root_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "select left(user, 1), sum(select_commands) from information_schema.user_statistics"
                    " where user regexp '^[tg][0-9]+$' group by 1"
                )
                for prefix, selects in cursor.fetchall():
                    counts[prefix] += int(selects) * QUERIES_PER_PROBE / SELECTS_PER_PROBE
        finally:
            connection.close()
    return counts


async def scrape_every(go: GoExporter, interval: float, until: float) -> list[float]:
    """GET its /metrics once per interval until ``until``, as Prometheus would; each scrape's seconds.

    Its CPU per query then includes serving what it collected, as sqlprobe's includes answering probes.
    """
    connection = Connection(go.host, go.port)
    request = f"GET /metrics HTTP/1.1\r\nHost: {go.host}:{go.port}\r\nAccept: text/plain\r\n\r\n".encode()
    durations: list[float] = []
    try:
        while (start := time.monotonic()) < until:
            await connection.exchange(request)
            durations.append(time.monotonic() - start)
            await asyncio.sleep(max(0.0, min(until, start + interval) - time.monotonic()))
    finally:
        connection.close()
    return durations


def targets_reporting(go: GoExporter) -> tuple[int, int]:
    """Targets whose `mysql_up` it exports, and targets whose last run of a query failed (its own gauge)."""
    with urllib.request.urlopen(f"http://{go.host}:{go.port}/metrics", timeout=60) as answer:
        text = answer.read().decode()
    up, failing = set(), set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sql_mysql_up":
                up.add(sample.labels["user"])
            elif sample.name == "sql_exporter_last_scrape_failed" and sample.value == 1:
                failing.add(sample.labels["user"])
    return len(up), len(failing)


def go_results(
    go: GoExporter, window: Mapping[str, float], counted: Mapping[str, float], scrapes: Sequence[float], queries: int
) -> dict[str, Any]:
    """The Go exporter's figures over the window, beside sqlprobe's ``queries`` in it, from ``counted`` by MariaDB."""
    go_queries = round(counted["g"])
    reporting, failing = targets_reporting(go)
    go_us, ours_us = per(window["go_cpu_s"] * 1e6, go_queries), per(window["exporter_cpu_s"] * 1e6, queries)
    return {
        "go_queries": go_queries,
        "go_queries_per_s": go_queries / window["wall_s"],
        "go_cpu_us_per_query": go_us,
        "go_cores": window["go_cpu_s"] / window["wall_s"],
        "exporter_to_go": ours_us / go_us,
        "go_targets_reporting": reporting,
        "go_targets_failing": failing,
        "go_metrics_scrapes": len(scrapes),
        "go_metrics_scrape_max_ms": max(scrapes, default=0.0) * 1000,
        # sqlprobe's queries as MariaDB counted them, to check the count against the bench's own.
        "exporter_queries_counted_by_mariadb": round(counted["t"]),
        # Its CPU over the queries it executed, answered in time or not: when probes time out (an overloaded
        # fleet), it still runs their queries, which the bench's count (3 per probe finished in the window) misses.
        "exporter_cpu_us_per_executed_query": per(window["exporter_cpu_s"] * 1e6, round(counted["t"])),
    }
