"""A real Prometheus monitors a fleet listed only in an inventory file, or found by its own discovery, through modules."""

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import missing
from tests.helpers import ITEMS_SET, Samples, parse_samples, value
from tests.prometheus import Prometheus, config_for_test, prometheus_binary, running_prometheus
from tests.served import serve
from tests.servers import MariaDB
from tests.test_inventory import write_inventory

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def prometheus() -> str:
    """Debian's prometheus; without it these tests fail under CI and skip elsewhere."""
    binary = prometheus_binary()
    if binary is None:
        missing("prometheus is not installed: apt-get install prometheus")
    return binary


FLEET_USER = "fleet_exporter"


@pytest.fixture
def fleet_password(fleet: Sequence[MariaDB]) -> Iterator[str]:
    """One user with one password on every server of the fleet, as an operator would have it; dropped after."""
    password = "fleet-" + secrets.token_hex(12)
    for server in fleet:
        server.execute(
            f"create user '{FLEET_USER}'@'127.0.0.1' identified by '{password}'",
            f"grant select on probe.* to '{FLEET_USER}'@'127.0.0.1'",
        )
    try:
        yield password
    finally:
        for server in fleet:
            server.execute(f"drop user '{FLEET_USER}'@'127.0.0.1'")


def fleet_module(directory: Path, password: str, **keys: Any) -> dict[str, Any]:
    """A module logging in as the fleet's user, its password in a file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "password").write_text(password)
    return {
        "dsn": f"mysql+pymysql://{FLEET_USER}@{{address}}/probe",
        "password_file": "password",
        "query_sets": ["items"],
        "timeout": "5s",
        **keys,
    }


def active_targets(server: Prometheus, job: str) -> dict[str, dict[str, str]] | None:
    """Labels of each target of ``job`` that Prometheus scrapes now, by instance."""
    response = httpx.get(f"{server.url}/api/v1/targets", params={"state": "active"}, timeout=10)
    response.raise_for_status()
    return {
        target["labels"]["instance"]: target["labels"]
        for target in response.json()["data"]["activeTargets"]
        if target["labels"]["job"] == job
    }


def own_metrics(url: str) -> Samples:
    """sqlprobe's own /metrics."""
    return parse_samples(httpx.get(f"{url}/metrics").text)


def stored_success(server: Prometheus, job: str) -> dict[tuple[str, str | None], float]:
    """probe_success by (instance, env label) as Prometheus stored it."""
    return {
        (labels["instance"], labels.get("env")): found
        for labels, found in server.query(f'probe_success{{job="{job}"}}')
    }


def test_a_fleet_listed_only_in_an_inventory_file_is_monitored_with_the_shipped_config_and_follows_the_file(
    tmp_path: Path, fleet: Sequence[MariaDB], fleet_password: str, closed_port: int, prometheus: str
) -> None:
    addresses = [f"127.0.0.1:{server.port}" for server in fleet]
    inventory = tmp_path / "sqlprobe" / "inventory" / "prod.yml"
    write_inventory(inventory, [{"targets": addresses, "labels": {"env": "prod"}}])
    module = fleet_module(tmp_path / "sqlprobe", fleet_password, inventory=["inventory/*.yml"])
    with serve(
        tmp_path / "sqlprobe", {}, {"items": ITEMS_SET}, "--refresh-interval", "1s", modules={"m": module}
    ) as exporter:
        address = exporter.url.removeprefix("http://")
        config = config_for_test((EXAMPLES / "prometheus.yml").read_text(), {"127.0.0.1:9104": address})
        with running_prometheus(prometheus, config) as server:
            expected = {(instance, "prod"): 1.0 for instance in addresses}
            server.wait_for("both servers probed", lambda: stored_success(server, "sqlprobe") == expected or None)
            stored = {
                (labels["instance"], labels["kind"]): found
                for labels, found in server.query('query_exporter_qty_by_kind{job="sqlprobe"}')
            }
            # One server leaves the file, another (down) joins it: Prometheus follows with no reload anywhere.
            changed = [addresses[0], f"127.0.0.1:{closed_port}"]
            write_inventory(inventory, [{"targets": changed, "labels": {"env": "prod"}}])
            server.wait_for(
                "the new list", lambda: set(active_targets(server, "sqlprobe") or ()) == set(changed) or None
            )
            server.wait_for(
                "the new server probed and failing",
                lambda: stored_success(server, "sqlprobe").get((changed[1], "prod")) == 0.0 or None,
            )
            inventory.write_text("- targets: [127.0.0.1:1\n")  # broken: the last good list stays
            server.wait_for(
                "the broken file noticed",
                lambda: (
                    value(own_metrics(exporter.url), "sqlprobe_inventory_file_ok", file=str(inventory)) == 0.0 or None
                ),
            )
            after_break = set(active_targets(server, "sqlprobe") or ())
    assert stored == {
        (f"127.0.0.1:{fleet_server.port}", kind): float(qty)
        for fleet_server in fleet
        for kind, qty in fleet_server.query(ITEMS_SET["qty_by_kind"]["query"])
    }
    assert after_break == set(changed)


def test_prometheus_own_discovery_probes_through_the_module_param_of_the_shipped_example(
    tmp_path: Path, fleet: Sequence[MariaDB], fleet_password: str, prometheus: str
) -> None:
    module = fleet_module(tmp_path / "sqlprobe", fleet_password, allow=["127.0.0.1"])
    discovered = tmp_path / "prometheus-sd" / "servers.yml"
    addresses = [f"127.0.0.1:{server.port}" for server in fleet]
    write_inventory(discovered, [{"targets": addresses, "labels": {"env": "prod"}}])
    with serve(tmp_path / "sqlprobe", {}, {"items": ITEMS_SET}, modules={"mysql_prod": module}) as exporter:
        address = exporter.url.removeprefix("http://")
        config = config_for_test(
            (EXAMPLES / "prometheus-modules.yml").read_text(),
            {"127.0.0.1:9104": address, "/etc/prometheus/mysql_prod/*.yml": str(discovered.parent / "*.yml")},
        )
        with running_prometheus(prometheus, config) as server:
            expected = {(instance, "prod"): 1.0 for instance in addresses}
            server.wait_for("both servers probed", lambda: stored_success(server, "mysql_prod") == expected or None)
            stored = {
                (labels["instance"], labels["kind"]): found
                for labels, found in server.query('query_exporter_qty_by_kind{job="mysql_prod"}')
            }
    assert stored == {
        (f"127.0.0.1:{fleet_server.port}", kind): float(qty)
        for fleet_server in fleet
        for kind, qty in fleet_server.query(ITEMS_SET["qty_by_kind"]["query"])
    }
