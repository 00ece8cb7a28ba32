"""Three sqlprobe replicas behind one real Prometheus running the shipped hashmod config and alert rules.

Every target is scraped through exactly one replica, each database server has sessions from that replica alone,
a stopped replica fires SqlprobeDown, and its targets are probed again when it is back.
"""

import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import yaml

from tests.helpers import metric, parse_samples, target
from tests.paths import ROOT_DIR
from tests.prometheus import Prometheus, config_for_test, running_prometheus
from tests.served import Served, serve, serve_files
from tests.servers import EXPORTER_USER, MariaDB

EXAMPLES = ROOT_DIR / "examples"
REPLICAS = 3  # as examples/prometheus-hashmod.yml ships
Found = TypeVar("Found")
SETS = {"basic": {"one": metric("select 1 as n", "n")}}


def _if(wanted: Callable[[Found], bool], found: Found) -> Found | None:
    """``found`` when it is ``wanted``, else None (for Prometheus.wait_for)."""
    return found if wanted(found) else None


def _hashmod(name: str, modulus: int = REPLICAS) -> int:
    """Prometheus's hashmod relabeling: the last 8 bytes of the MD5 of the value, big-endian, modulo."""
    return int.from_bytes(hashlib.md5(name.encode()).digest()[8:], "big") % modulus


def _name_for(prefix: str, replica: int) -> str:
    """The first name ``prefix-N`` whose hash sends it to ``replica``."""
    return next(f"{prefix}-{n}" for n in range(1000) if _hashmod(f"{prefix}-{n}") == replica)


def _rules_firing_in_a_second(tmp_path: Path) -> Path:
    """The shipped alert rules, each with `for: 1s` so the test waits seconds, not minutes."""
    rules: dict[str, Any] = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "1s"
    copy = tmp_path / "alerts.yml"
    copy.write_text(yaml.safe_dump(rules))
    return copy


def _socket_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` holds open, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:  # closed since listed
            continue
        if link.startswith("socket:["):
            inodes.add(link.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _sessions_by_replica(server: MariaDB, replicas: Sequence[Served]) -> list[int] | None:
    """The replica holding each of the exporter user's sessions on ``server`` (by client port); None while a session
    maps to no replica (opened or closed between the two looks) or there is none yet."""
    hosts = [str(row[0]) for row in server.root_query(
        f"select host from information_schema.processlist where user = '{EXPORTER_USER}'"
    )]  # fmt: skip
    ports = [_socket_ports(replica.process.pid) for replica in replicas]
    owners = [[index for index, held in enumerate(ports) if int(host.rsplit(":", 1)[1]) in held] for host in hosts]
    if not owners or any(len(found) != 1 for found in owners):
        return None
    return sorted(found[0] for found in owners)


def _probed(replica: Served, times: int) -> set[str]:
    """The targets ``replica`` has probed at least ``times`` times, from its own /metrics."""
    counts = parse_samples(httpx.get(f"{replica.url}/metrics").text).get("sqlprobe_probes_total", {})
    return {dict(labels)["target"] for labels, count in counts.items() if count >= times}


def _up(server: Prometheus) -> dict[str, tuple[str, float]]:
    """Each probed target's job and its `up`."""
    return {labels["instance"]: (labels["job"], found) for labels, found in server.query('up{job=~"sqlprobe_[0-9]+"}')}


def _firing(server: Prometheus, alertname: str) -> set[str]:
    """The instances ``alertname`` fires for now, from /api/v1/alerts."""
    return {
        alert["labels"]["instance"]
        for alert in server.alerts()
        if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"
    }


def test_three_replicas_split_the_fleet_and_a_stopped_one_alerts_and_comes_back(
    tmp_path: Path, fleet: Sequence[MariaDB], prometheus: str
) -> None:
    # MariaDB server k is a target of replica k; two SQLite targets per replica besides.
    servers = {_name_for(f"mariadb-{index}", index): server for index, server in enumerate(fleet)}
    sqlite = [_name_for(f"sqlite-{index}-{copy}", index) for index in range(REPLICAS) for copy in range(2)]
    targets = {name: target(server.dsn, "basic") for name, server in servers.items()}
    targets |= {name: target("sqlite://", "basic") for name in sqlite}
    owner = {name: _hashmod(name) for name in targets}
    share = [{name for name in targets if owner[name] == index} for index in range(REPLICAS)]
    assert all(share), "every replica must have targets"
    stopped = 1  # the replica of fleet[1]

    with ExitStack() as stack:
        replicas = [stack.enter_context(serve(tmp_path / f"sqlprobe-{i}", targets, SETS)) for i in range(REPLICAS)]
        addresses = [replica.url.removeprefix("http://") for replica in replicas]
        config = config_for_test(
            (EXAMPLES / "prometheus-hashmod.yml").read_text(),
            {f"sqlprobe-{index}:9104": address for index, address in enumerate(addresses)},
        )
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(_rules_firing_in_a_second(tmp_path))]
        server = stack.enter_context(running_prometheus(prometheus, config))

        probed = server.wait_for(
            "two probes of every target",
            lambda: _if(lambda found: set().union(*found) == set(targets), [_probed(r, 2) for r in replicas]),
        )
        up = server.wait_for("every target up", lambda: _if(lambda found: len(found) == len(targets), _up(server)))
        sessions = server.wait_for(
            "a session on each server, held by a replica",
            lambda: _if(lambda found: None not in found, [_sessions_by_replica(db, replicas) for db in fleet]),
            10,
        )

        replicas[stopped].process.terminate()
        replicas[stopped].process.wait(10)
        down = server.wait_for("SqlprobeDown firing", lambda: _firing(server, "SqlprobeDown") or None)
        up_while_down = server.wait_for(
            "the stopped replica's targets down",
            lambda: _if(lambda found: {n for n, (_, v) in found.items() if v == 0} == share[stopped], _up(server)),
        )

        back = stack.enter_context(
            serve_files(tmp_path / f"sqlprobe-{stopped}", port=int(addresses[stopped].rsplit(":", 1)[1]))
        )
        replicas[stopped] = back
        probed_again = server.wait_for(
            "a probe of each of its targets by the replica started again",
            lambda: _if(lambda found: found == share[stopped], _probed(back, 1)),
        )
        server.wait_for("every target up again", lambda: all(v == 1 for _, v in _up(server).values()) or None)
        server.wait_for("SqlprobeDown resolved", lambda: not _firing(server, "SqlprobeDown") or None)
        sessions_after = server.wait_for(
            "the sessions of the replica started again",
            lambda: _sessions_by_replica(fleet[stopped], replicas),
            10,
        )

    # Each target in the job its hash picks, probed by that job's replica alone.
    assert up == {name: (f"sqlprobe_{owner[name]}", 1.0) for name in targets}
    assert probed == share
    # Each database server has sessions, every one of them from the replica its target belongs to.
    assert [set(found or ()) for found in sessions] == [{index} for index in range(len(fleet))]
    # The stopped replica alone is down, its targets alone unscraped; then all of them probed again, by it.
    assert down == {addresses[stopped]}
    assert {name for name, (_, found) in up_while_down.items() if found == 0} == share[stopped]
    assert probed_again == share[stopped]
    assert set(sessions_after) == {stopped}
