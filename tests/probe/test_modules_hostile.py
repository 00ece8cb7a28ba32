"""Module probes from someone who wants the module's login sent to a server of their own, or sqlprobe to misbehave."""

import json
import secrets
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from app.config import yamlfile
from app.config.inventory import read_inventory_file
from app.errors import ConfigError
from app.web.discovery import target_groups
from app.web.status_page import MAX_ROWS
from tests.drivers.test_rotation import USER as ROTATING_USER
from tests.drivers.test_rotation import rotating_user, set_password  # noqa: F401 - rotating_user is a fixture
from tests.helpers import ITEMS_SET, client_for, parse_samples, value, wait_until
from tests.probe.test_modules import connection_attempted, listener, mariadb_module, write_modules
from tests.served import serve
from tests.servers import MariaDB

SETS = {"basic": {"one": {**ITEMS_SET["items_created"]}}}


def module(*allow: str) -> dict[str, object]:
    """A module whose login must never reach a server outside ``allow``."""
    return {
        "dsn": "mysql+pymysql://u:not-for-you@{address}/",
        "query_sets": ["basic"],
        "allow": list(allow),
        "timeout": "2s",
    }


def test_a_target_with_a_line_break_or_a_non_ascii_letter_gets_400(tmp_path: Path) -> None:
    targets = [
        "db-1\n",  # re's $ matches before a final line break: "db-1\n" was resolved, and logged on two lines
        "db-1.db.example.net\n",
        "db-1\n:3306",
        "db-1:3306\n",
        "\u212a.db.example.net",  # KELVIN SIGN: lower() makes it an ASCII k
    ]
    allow = module("db-*", "*.db.example.net", "k.db.example.net")
    with serve(tmp_path, {}, SETS, modules={"m": allow}) as served, httpx.Client() as client:
        answers = [client.get(f"{served.url}/probe", params={"target": target, "module": "m"}) for target in targets]
        own = client.get(f"{served.url}/metrics").text
    assert [answer.status_code for answer in answers] == [400] * len(targets), [answer.text for answer in answers]
    assert all(answer.text.startswith("invalid target for module 'm': ") for answer in answers)
    assert "sqlprobe_probes_total{" not in own
    assert "probe of target" not in served.log.read_text()


def test_an_ipv4_mapped_address_is_not_allowed_by_an_ipv6_network_that_merely_spans_it(tmp_path: Path) -> None:
    # [::ffff:127.0.0.2] is 127.0.0.2 reached over IPv6: allowing "any IPv6 server" must not allow every IPv4 one.
    with listener("127.0.0.2") as (outside, port):
        mapped = module("::/0", "2001:db8::/32", "127.0.0.1")
        written = module(f"[::ffff:127.0.0.0/104]:{port}")
        with serve(tmp_path, {}, SETS, modules={"m": mapped, "written": written}) as served, httpx.Client() as client:
            refused = client.get(f"{served.url}/probe", params={"target": f"[::ffff:127.0.0.2]:{port}", "module": "m"})
            attempted = connection_attempted(outside)
            allowed = client.get(
                f"{served.url}/probe", params={"target": f"[::ffff:127.0.0.2]:{port}", "module": "written"}
            )
            attempted_when_written = connection_attempted(outside)
    assert refused.status_code == 403, refused.text
    assert not attempted
    assert allowed.status_code == 200  # an allow entry written for mapped addresses still allows them
    assert attempted_when_written


def test_an_inventory_file_with_more_values_than_the_alias_bound_is_read_when_it_has_no_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound stops aliases of aliases ("billion laughs"); a fleet of 15,000 servers, one group and three labels
    # each, is 105,000 values. The bound is lowered here so the file stays small enough to read quickly.
    monkeypatch.setattr(yamlfile, "MAX_VALUES", 1000)
    groups = [{"targets": [f"db-{index}.db.example.net:3306"], "labels": {"rack": str(index)}} for index in range(300)]
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(groups))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    (tmp_path / "bomb.yml").write_text(bomb)
    entries = read_inventory_file(tmp_path / "fleet.yml")
    with pytest.raises(ConfigError, match="more than 1000 values once aliases are expanded"):
        yamlfile.load_yaml(tmp_path / "bomb.yml")
    assert [str(address) for address, _ in entries] == [f"db-{index}.db.example.net:3306" for index in range(300)]


def test_an_address_with_a_password_in_it_is_refused_without_repeating_it(tmp_path: Path) -> None:
    # A DSN pasted into an inventory file where an address belongs: the log line and --check-config name the
    # file, line and entry, not its password.
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump([{"targets": ["exporter:hunter2-rotated@db-1:3306"]}]))
    modules = {"m": {**module("*.db.example.net"), "inventory": ["fleet.yml"]}}
    (tmp_path / "targets.yml").write_text(yaml.safe_dump({"modules": modules}))
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"query_sets": SETS}))
    command = [str(Path(sys.executable).parent / "sqlprobe"), "--targets", str(tmp_path / "targets.yml")]
    checked = subprocess.run(
        [*command, "--queries", str(tmp_path / "queries.yml"), "--check-config"], capture_output=True, text=True
    )
    assert checked.returncode != 0
    assert f"{tmp_path / 'fleet.yml'}:2: [0].targets[0]: " in checked.stdout + checked.stderr
    assert "hunter2" not in checked.stdout + checked.stderr
    with serve(tmp_path / "served", {}, SETS, modules={"m": module("*")}) as served, httpx.Client() as client:
        answer = client.get(f"{served.url}/probe", params={"target": "exporter:hunter2-rotated@db-1", "module": "m"})
    assert answer.status_code == 400
    assert "hunter2" not in answer.text


def test_a_probe_is_answered_while_sd_lists_a_big_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Listing 30,000 inventory servers takes a while: on the event loop it held every probe and health check back
    # (1.6 s per request for 20,000 servers on the loaded test machine), for anyone who asks for /sd in a loop.
    servers = [{"targets": [f"127.20.{index // 250}.{index % 250 + 1}:3306"]} for index in range(30_000)]
    (tmp_path / "fleet.json").write_text(json.dumps(servers))
    modules = {"m": {**module("127.0.0.1"), "inventory": ["fleet.json"]}}
    config = write_modules(tmp_path, modules, SETS)
    listing, answered = threading.Event(), threading.Event()

    def announced_target_groups(*args: Any) -> Any:
        listing.set()
        # Held until /-/healthy was answered: listing on the event loop, it could not be before this wait ends.
        answered.wait(10)
        return target_groups(*args)

    monkeypatch.setattr("app.web.app.target_groups", announced_target_groups)
    finished: list[str] = []
    with client_for(config) as client, ThreadPoolExecutor(1) as pool:
        sd = pool.submit(client.get, "/sd")
        sd.add_done_callback(lambda _: finished.append("/sd"))
        assert listing.wait(30)
        healthy = client.get("/-/healthy")
        finished.append("/-/healthy")
        answered.set()
        groups = sd.result().json()
    assert healthy.status_code == 200
    assert len(groups) == 30_000
    assert finished == ["/-/healthy", "/sd"]


def test_the_status_page_of_a_big_inventory_shows_a_bounded_number_of_rows_failing_first(
    tmp_path: Path, closed_port: int
) -> None:
    # 20,000 inventory servers made an 8 MB page that held every probe back for 1.6 s per request, for anyone.
    servers = [{"targets": [f"127.20.{index // 250}.{index % 250 + 1}:3306"]} for index in range(MAX_ROWS + 500)]
    (tmp_path / "fleet.json").write_text(json.dumps(servers))
    modules = {"m": {**module(f"127.0.0.1:{closed_port}"), "inventory": ["fleet.json"]}}
    config = write_modules(tmp_path, modules, SETS)
    with client_for(config) as client:
        failed = client.get("/probe", params={"target": f"127.0.0.1:{closed_port}", "module": "m"})
        page = client.get("/").text
    table = page[page.index('<tbody id="targets">') : page.index("</tbody>")]
    assert value(parse_samples(failed.text), "probe_success") == 0.0
    assert table.count("<tr") == MAX_ROWS
    assert table.index(f"127.0.0.1:{closed_port}") < table.index("127.20.0.1:3306")  # the failing one is shown, first
    assert f'<b id="total">{MAX_ROWS + 501}</b> targets' in page
    assert f"targets 1 to {MAX_ROWS:,} of {MAX_ROWS + 501:,} (failing ones first)" in page


def test_every_target_of_a_big_inventory_is_found_by_the_search_and_on_a_later_page(tmp_path: Path) -> None:
    addresses = [f"127.20.{index // 250}.{index % 250 + 1}:3306" for index in range(MAX_ROWS + 500)]
    (tmp_path / "fleet.json").write_text(json.dumps([{"targets": addresses}]))
    config = write_modules(tmp_path, {"m": {**module("127.0.0.1"), "inventory": ["fleet.json"]}}, SETS)
    last = sorted(addresses)[-1]  # rows of one state are in order of name: this one is the last row of all

    def table(**params: str) -> str:
        page = client.get("/", params=params).text
        return page[page.index('<tbody id="targets">') : page.index("</tbody>")]

    with client_for(config) as client:
        first, second, searched = table(), table(page="2"), table(q=f"{last} never")
        navigation = client.get("/").text
        beyond = table(page="9")
    assert last not in first
    assert second.count("<tr") == 500
    assert last in second
    assert searched.count("<tr") == 1
    assert last in searched
    assert 'href="/?page=2">next page</a>' in navigation
    assert beyond == second  # a page past the last shows the last


@pytest.mark.parametrize("params", [{"page": "0"}, {"page": "two"}, {"q": "x" * 201}])
def test_a_bad_status_page_parameter_gets_a_sentence(tmp_path: Path, params: dict[str, str]) -> None:
    config = write_modules(tmp_path, {"m": module("127.0.0.1")}, SETS)
    with client_for(config) as client:
        answer = client.get("/", params=params)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert next(iter(params)) in answer.text


def test_a_rotated_password_whose_reload_met_a_half_written_targets_file_takes_effect_once_the_file_is_whole(
    tmp_path: Path,
    rotating_user: MariaDB,  # noqa: F811 - pytest passes the fixture imported above
) -> None:
    # Configuration management rewrites targets.yml (same contents, written in place) while a password rotates.
    server = rotating_user
    first, second = f"first-{secrets.token_hex(8)}", f"second-{secrets.token_hex(8)}"
    set_password(server, first)
    (tmp_path / "password").write_text(first + "\n")
    module = {
        "dsn": f"mysql+pymysql://{ROTATING_USER}@{{address}}/probe",
        "password_file": "password",
        "query_sets": ["items"],
        "allow": [f"127.0.0.1:{server.port}"],
        "timeout": "3s",
    }
    config = write_modules(tmp_path, {"m": module}, {"items": ITEMS_SET})
    whole = (tmp_path / "targets.yml").read_text()
    probe = {"target": f"127.0.0.1:{server.port}", "module": "m"}
    with client_for(config, refresh_interval=0.2) as client:

        def success() -> float:
            return value(parse_samples(client.get("/probe", params=probe).text), "probe_success")

        def reloaded() -> float:
            return value(parse_samples(client.get("/metrics").text), "sqlprobe_config_last_reload_successful")

        before = success()
        set_password(server, second)
        (tmp_path / "targets.yml").write_text(whole[: len(whole) // 2])
        (tmp_path / "password").write_text(second + "\n")
        assert wait_until(lambda: reloaded() == 0.0, 10)  # the rotation's reload met the half-written file
        (tmp_path / "targets.yml").write_text(whole)
        assert wait_until(lambda: success() == 1.0, 10)
    assert before == 1.0


def test_a_deeply_nested_json_inventory_file_is_an_invalid_file_and_the_other_files_still_refresh(
    tmp_path: Path,
) -> None:
    # json.loads raises RecursionError, not ValueError: it escaped every refresh (other files' changes and password
    # rotations stopped with it) and --check-config printed a traceback.
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "a.json").write_text(json.dumps([{"targets": ["127.20.0.1:3306"]}]))
    modules = {"m": {**module("127.0.0.1"), "inventory": ["inventory/*.json"]}}
    config = write_modules(tmp_path, modules, SETS)
    with client_for(config, refresh_interval=0.2) as client:
        (inventory / "a.json").write_text("[" * 100_000 + "]" * 100_000)
        (inventory / "b.json").write_text(json.dumps([{"targets": ["127.20.0.2:3306"]}]))

        def listed() -> set[str]:
            return {address for group in client.get("/sd").json() for address in group["targets"]}

        assert wait_until(lambda: listed() == {"127.20.0.1:3306", "127.20.0.2:3306"}, 10), listed()
        own = parse_samples(client.get("/metrics").text)
    assert value(own, "sqlprobe_inventory_file_ok", file=str(inventory / "a.json")) == 0.0
    command = [str(Path(sys.executable).parent / "sqlprobe"), "--targets", str(tmp_path / "targets.yml")]
    checked = subprocess.run(
        [*command, "--queries", str(tmp_path / "queries.yml"), "--check-config"], capture_output=True, text=True
    )
    assert checked.returncode != 0
    assert "Traceback" not in checked.stderr
    assert f"{inventory / 'a.json'}: invalid JSON: nested too deeply" in checked.stdout + checked.stderr


def test_clients_cycling_through_allowed_addresses_do_not_evict_a_target_that_answers(
    tmp_path: Path, fleet: list[MariaDB]
) -> None:
    # With allow 127.0.0.0/8 and max_targets 4, addresses that never answer took the healthy target's place: its
    # probes failed ("the target was removed while this probe waited") and its series and pooled session were reset.
    server = fleet[1]
    healthy = f"127.0.0.1:{server.port}"
    module = mariadb_module(tmp_path, server, [f"127.0.0.0/8:{server.port}"], max_targets=4, timeout="2s")
    config = write_modules(tmp_path, {"m": module}, {"items": ITEMS_SET})
    outcomes = []
    with client_for(config) as client:
        client.get("/probe", params={"target": healthy, "module": "m"})
        sessions = {session for session, *_ in server.exporter_sessions()}
        for round_ in range(10):  # four other loopback addresses a round: nothing listens there on that port
            for index in range(4):
                address = f"127.0.{round_ + 1}.{index + 1}:{server.port}"
                client.get("/probe", params={"target": address, "module": "m"})
            answer = client.get("/probe", params={"target": healthy, "module": "m"})
            outcomes.append(value(parse_samples(answer.text), "probe_success"))
        kept = {session for session, *_ in server.exporter_sessions()}
        own = parse_samples(client.get("/metrics").text)
    assert outcomes == [1.0] * 10
    assert kept == sessions  # the same pooled session all along: its engine was never let go
    assert value(own, "sqlprobe_probes_total", target=f"m/{healthy}", result="success") == 11.0
    assert value(own, "sqlprobe_engines") == 4


def test_a_new_address_gets_503_when_every_kept_target_of_its_module_answers(
    tmp_path: Path, fleet: list[MariaDB]
) -> None:
    server = fleet[1]
    healthy, other = f"127.0.0.1:{server.port}", f"127.0.0.2:{server.port}"
    module = mariadb_module(tmp_path, server, [f"127.0.0.0/8:{server.port}"], max_targets=1)
    config = write_modules(tmp_path, {"m": module}, {"items": ITEMS_SET})
    with client_for(config) as client:
        first = client.get("/probe", params={"target": healthy, "module": "m"})
        refused = client.get("/probe", params={"target": other, "module": "m"})
        again = client.get("/probe", params={"target": healthy, "module": "m"})
    assert value(parse_samples(first.text), "probe_success") == 1.0
    assert refused.status_code == 503
    assert refused.text == (
        f"module 'm' keeps 1 targets (its max_targets), and every one of them answers: {other} is not probed in"
        " place of one (raise max_targets for more)\n"
    )
    assert value(parse_samples(again.text), "probe_success") == 1.0
