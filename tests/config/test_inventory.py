"""Inventory files: a module's servers from Prometheus file_sd files, in /sd and allowed, read again by themselves."""

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from app.config.inventory import read_inventory_file
from app.errors import ConfigError
from tests.helpers import ITEMS_SET, client_for, parse_samples, value, wait_until
from tests.probe.test_modules import mariadb_module, write_modules
from tests.servers import MariaDB

REFRESH = 0.2


def write_inventory(path: Path, groups: list[dict[str, Any]]) -> None:
    """A file_sd file (JSON when ``path`` ends in .json), replaced whole as config management would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(groups, indent="\t") if path.suffix == ".json" else yaml.safe_dump(groups)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def sd_targets(client: TestClient) -> dict[str, dict[str, str]]:
    """The module targets /sd lists: labels by address."""
    return {
        group["targets"][0]: group["labels"]
        for group in client.get("/sd").json()
        if "__param_module" in group["labels"]
    }


def inventory_module(tmp_path: Path, server: MariaDB) -> dict[str, Any]:
    return mariadb_module(tmp_path, server, [], inventory=["inventory/*.yml", "inventory/*.json"], default_port=3306)


def test_servers_of_an_inventory_file_are_listed_in_sd_with_its_labels_and_may_be_probed(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    address = f"127.0.0.1:{server.port}"
    write_inventory(tmp_path / "inventory" / "prod.yml", [{"targets": [address], "labels": {"env": "prod"}}])
    write_inventory(tmp_path / "inventory" / "legacy.json", [{"targets": ["db-legacy.example.org"]}])
    config = write_modules(tmp_path, {"mysql_prod": inventory_module(tmp_path, server)}, {"items": ITEMS_SET})
    with client_for(config) as client:
        listed = sd_targets(client)
        filtered = client.get("/sd", params={"query_set": "items"}).json()
        probe = client.get("/probe", params={"target": address, "module": "mysql_prod"})
        unlisted = client.get("/probe", params={"target": f"127.0.0.2:{server.port}", "module": "mysql_prod"})
        page = client.get("/").text
    module_labels = {
        "__meta_sqlprobe_module": "mysql_prod",
        "__param_module": "mysql_prod",
        "__meta_sqlprobe_query_sets": "items",
    }
    assert listed == {
        address: {"env": "prod", **module_labels},
        "db-legacy.example.org:3306": module_labels,  # the module's default port
    }
    assert [group["labels"]["__param_query_set"] for group in filtered] == ["items", "items"]
    assert value(parse_samples(probe.text), "probe_success") == 1.0
    assert unlisted.status_code == 403
    assert "<td>mysql_prod</td>" in page
    assert "<td>2</td>" in page  # servers in its inventory


def test_inventory_changes_take_effect_by_themselves_and_a_broken_file_keeps_its_last_good_list(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[0]
    first, second = f"127.0.0.1:{server.port}", "db2.example.net:3306"
    inventory = tmp_path / "inventory" / "prod.yml"
    write_inventory(inventory, [{"targets": [first]}])
    config = write_modules(tmp_path, {"mysql_prod": inventory_module(tmp_path, server)}, {"items": ITEMS_SET})
    file_ok = {"file": str(inventory)}
    with client_for(config, refresh_interval=REFRESH) as client:

        def engines() -> float:
            return value(parse_samples(client.get("/metrics").text), "sqlprobe_engines")

        assert set(sd_targets(client)) == {first}
        probed = client.get("/probe", params={"target": first, "module": "mysql_prod"})
        engines_while_listed = engines()
        write_inventory(inventory, [{"targets": [second]}])
        assert wait_until(lambda: set(sd_targets(client)) == {second}, 10)
        # The server that left the file loses its engine (and its pooled connection) with its permission.
        assert wait_until(lambda: engines() == 0, 10)
        refused = client.get("/probe", params={"target": first, "module": "mysql_prod"})

        inventory.write_text("- targets: [db3.example.net\n")  # cut short mid-write
        assert wait_until(lambda: "inventory file" in caplog.text and "is invalid" in caplog.text, 10)
        broken = sd_targets(client)
        own_broken = parse_samples(client.get("/metrics").text)

        inventory.unlink()
        assert wait_until(lambda: sd_targets(client) == {}, 10)
        own_gone = parse_samples(client.get("/metrics").text)
    assert value(parse_samples(probed.text), "probe_success") == 1.0
    assert engines_while_listed == 1
    assert refused.status_code == 403
    assert set(broken) == {second}
    assert value(own_broken, "sqlprobe_inventory_file_ok", **file_ok) == 0.0
    assert f"{inventory}:2: invalid YAML: expected ',' or ']', but got '<stream end>'" in caplog.text
    assert tuple(file_ok.items()) not in own_gone.get("sqlprobe_inventory_file_ok", {})


def test_check_config_reports_inventory_problems_with_file_line_and_key_path(tmp_path: Path) -> None:
    module = {"dsn": "mysql+pymysql://u@{address}/", "query_sets": ["basic"], "inventory": ["inventory/*.yml"]}
    write_modules(tmp_path, {"m": module}, {"basic": {"one": {**ITEMS_SET["items_created"]}}})
    bad_key, bad_addresses = tmp_path / "inventory" / "a.yml", tmp_path / "inventory" / "b.yml"
    bad_key.parent.mkdir()
    bad_key.write_text("- targets: [db1.example.net]\n  lables: {env: prod}\n")
    bad_addresses.write_text(
        "- targets:\n  - db1.example.net:3306\n  - user@db2.example.net\n- targets: ['[::1]:70000']\n"
    )
    arguments = ["--targets", str(tmp_path / "targets.yml"), "--queries", str(tmp_path / "queries.yml")]
    result = subprocess.run(
        [sys.executable, "-m", "app", "--check-config", *arguments], capture_output=True, text=True, check=False
    )
    errors = result.stderr.splitlines()
    assert result.returncode == 1
    assert errors[1:] == [
        f"  {bad_key}:2: [0].lables: unknown key",
        f"  {bad_addresses}:3: [0].targets[1]: "
        "the address has a user@ part; a module's DSN gives the user, the target only host[:port]",
        f"  {bad_addresses}:4: [1].targets[0]: '[::1]:70000' is not an address: the port must be a number from 1 to 65535",
    ]


def test_a_big_yaml_inventory_lists_what_the_same_inventory_in_json_lists(tmp_path: Path) -> None:
    # YAML is read by libyaml first (fast, without lines): the same servers and labels as the exact JSON reading.
    groups = [
        {"targets": [f"127.0.{index // 250}.{index % 250 + 1}:3306"], "labels": {"rack": f"r{index % 7}"}}
        for index in range(2000)
    ]
    (tmp_path / "fleet.json").write_text(json.dumps(groups))
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(groups, default_flow_style=True))
    from_json = read_inventory_file(tmp_path / "fleet.json")
    assert read_inventory_file(tmp_path / "fleet.yml") == from_json
    assert len(from_json) == 2000


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- targets: ['127.0.0.1:3306']\n  targets: ['127.0.0.2:3306']\n", ":2: [0].targets: duplicate key"),
        (
            "- targets: ['127.0.0.1:3306']\n  labels: {rack: r1}\n- targets: ['not an address']\n",
            ":3: [1].targets[0]: ",
        ),
    ],
    ids=["duplicate-key", "bad-address"],
)
def test_a_problem_in_a_yaml_inventory_is_still_told_with_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "fleet.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        read_inventory_file(path)
    assert f"{path}{problem}" in str(refused.value)
