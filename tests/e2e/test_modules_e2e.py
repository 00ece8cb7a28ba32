"""A real Prometheus monitors a fleet listed only in an inventory file, or found by its own discovery, through modules."""

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.config.test_inventory import write_inventory
from tests.helpers import ITEMS_SET, Samples, parse_samples, value
from tests.paths import ROOT_DIR
from tests.prometheus import Prometheus, config_for_test, running_prometheus
from tests.served import Served, serve
from tests.servers import MariaDB

EXAMPLES = ROOT_DIR / "examples"


FLEET_USER = "fleet_exporter"


@dataclass(frozen=True)
class Monitored:
    """sqlprobe with two modules, and one Prometheus running both shipped configs' probe jobs against it."""

    exporter: Served
    prometheus: Prometheus
    inventory: Path  # sqlprobe's inventory file of module "m", which the job of examples/prometheus.yml finds in /sd
    addresses: list[str]  # of the fleet's servers


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory, fleet: Sequence[MariaDB], prometheus: str
) -> Iterator[Monitored]:
    """The fleet in sqlprobe's inventory file (module m) and in Prometheus's own file_sd (module mysql_prod)."""
    root = tmp_path_factory.mktemp("modules-e2e")
    addresses = [f"127.0.0.1:{server.port}" for server in fleet]
    inventory = root / "sqlprobe" / "inventory" / "prod.yml"
    write_inventory(inventory, [{"targets": addresses, "labels": {"env": "prod"}}])
    discovered = root / "prometheus-sd" / "servers.yml"
    write_inventory(discovered, [{"targets": addresses, "labels": {"env": "prod"}}])
    password = "fleet-" + secrets.token_hex(12)
    for server in fleet:
        # One user with one password on every server, as an operator would have it.
        server.execute(
            f"create user '{FLEET_USER}'@'127.0.0.1' identified by '{password}'",
            f"grant select on probe.* to '{FLEET_USER}'@'127.0.0.1'",
        )
    (root / "sqlprobe").mkdir(exist_ok=True)
    (root / "sqlprobe" / "password").write_text(password)
    module = {
        "dsn": f"mysql+pymysql://{FLEET_USER}@{{address}}/probe",
        "password_file": "password",
        "query_sets": ["items"],
        "timeout": "5s",
    }
    modules = {"m": {**module, "inventory": ["inventory/*.yml"]}, "mysql_prod": {**module, "allow": addresses}}
    try:
        with serve(
            root / "sqlprobe", {}, {"items": ITEMS_SET}, "--refresh-interval", "1s", modules=modules
        ) as exporter:
            address = exporter.url.removeprefix("http://")
            config = config_for_test((EXAMPLES / "prometheus.yml").read_text(), {"127.0.0.1:9104": address})
            own_discovery = config_for_test(
                (EXAMPLES / "prometheus-modules.yml").read_text(),
                {"127.0.0.1:9104": address, "/etc/prometheus/mysql_prod/*.yml": str(discovered.parent / "*.yml")},
            )
            config["scrape_configs"] += [
                job for job in own_discovery["scrape_configs"] if job["job_name"] == "mysql_prod"
            ]
            with running_prometheus(prometheus, config) as scraper:
                yield Monitored(exporter, scraper, inventory, addresses)
    finally:
        for server in fleet:
            server.execute(f"drop user '{FLEET_USER}'@'127.0.0.1'")


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


def expected_qty(fleet: Sequence[MariaDB]) -> dict[tuple[str, str], float]:
    """qty_by_kind by (instance, kind), from the same SQL run directly on each server."""
    return {
        (f"127.0.0.1:{server.port}", kind): float(qty)
        for server in fleet
        for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"])
    }


def stored_qty(server: Prometheus, job: str) -> dict[tuple[str, str], float]:
    """qty_by_kind by (instance, kind) as Prometheus stored it."""
    return {
        (labels["instance"], labels["kind"]): found
        for labels, found in server.query(f'query_exporter_qty_by_kind{{job="{job}"}}')
    }


def test_prometheus_own_discovery_probes_through_the_module_param_of_the_shipped_example(
    monitored: Monitored, fleet: Sequence[MariaDB]
) -> None:
    server = monitored.prometheus
    expected = {(instance, "prod"): 1.0 for instance in monitored.addresses}
    server.wait_for("both servers probed", lambda: stored_success(server, "mysql_prod") == expected or None)
    assert stored_qty(server, "mysql_prod") == expected_qty(fleet)


def test_a_fleet_listed_only_in_an_inventory_file_is_monitored_with_the_shipped_config_and_follows_the_file(
    monitored: Monitored, fleet: Sequence[MariaDB], closed_port: int
) -> None:
    server, inventory, addresses = monitored.prometheus, monitored.inventory, monitored.addresses
    expected = {(instance, "prod"): 1.0 for instance in addresses}
    server.wait_for("both servers probed", lambda: stored_success(server, "sqlprobe") == expected or None)
    stored = stored_qty(server, "sqlprobe")
    # One server leaves the file, another (down) joins it: Prometheus follows with no reload anywhere.
    changed = [addresses[0], f"127.0.0.1:{closed_port}"]
    write_inventory(inventory, [{"targets": changed, "labels": {"env": "prod"}}])
    server.wait_for("the new list", lambda: set(active_targets(server, "sqlprobe") or ()) == set(changed) or None)
    server.wait_for(
        "the new server probed and failing",
        lambda: stored_success(server, "sqlprobe").get((changed[1], "prod")) == 0.0 or None,
    )
    inventory.write_text("- targets: [127.0.0.1:1\n")  # broken: the last good list stays
    server.wait_for(
        "the broken file noticed",
        lambda: (
            value(own_metrics(monitored.exporter.url), "sqlprobe_inventory_file_ok", file=str(inventory)) == 0.0 or None
        ),
    )
    after_break = set(active_targets(server, "sqlprobe") or ())
    assert stored == expected_qty(fleet)
    assert after_break == set(changed)
