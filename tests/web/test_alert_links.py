"""The shipped alert rules link to /logs?target=INSTANCE, the one label they have: the link opens the target's
account, a module's target (whose module is only a URL parameter of its scrape job) included."""

import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from tests.helpers import ITEMS_SET, client_for
from tests.paths import ROOT_DIR
from tests.probe.test_modules import mariadb_module, write_modules
from tests.servers import MariaDB

RULES = ROOT_DIR / "examples" / "alerts.yml"
LINK = re.compile(r"/logs\?target=\{\{ \$labels\.instance \}\}")


def _alert_links(instance: str) -> set[str]:
    """The /logs links of the shipped alerts' descriptions, for ``instance``."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    descriptions = [
        rule["annotations"]["description"] for group in groups for rule in group["rules"] if "alert" in rule
    ]
    links = {match.group(0) for description in descriptions for match in LINK.finditer(description)}
    assert links, "the shipped alerts link to /logs"
    return {link.replace("{{ $labels.instance }}", instance) for link in links}


def test_the_alerts_logs_link_opens_the_last_probe_of_a_module_target(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int
) -> None:
    refused, healthy = f"127.0.0.1:{closed_port}", f"127.0.0.1:{fleet[0].port}"
    module = mariadb_module(tmp_path, fleet[0], [refused, healthy])
    config = write_modules(tmp_path, {"mysql_prod": module, "mysql_other": module}, {"items": ITEMS_SET})
    with client_for(config) as client:
        client.get("/probe", params={"target": refused, "module": "mysql_prod"})
        for name in ("mysql_prod", "mysql_other"):
            client.get("/probe", params={"target": healthy, "module": name})
        opened = [client.get(link) for link in _alert_links(refused)]
        ambiguous = [client.get(link) for link in _alert_links(healthy)]
        never = [client.get(link) for link in _alert_links("127.0.0.1:1")]
    assert {response.status_code for response in opened} == {200}
    assert all(
        response.text.startswith(f"# last probe of {refused} (module mysql_prod): failed") for response in opened
    )
    # Probed with two modules: the link cannot choose, and says how to.
    assert {(response.status_code, response.text) for response in ambiguous} == {
        (400, f"target '{healthy}' has been probed with modules mysql_other, mysql_prod: add &module= to say which\n")
    }
    assert {(response.status_code, response.text) for response in never} == {
        (
            404,
            f"unknown target '127.0.0.1:1': it is not in {tmp_path / 'targets.yml'}, and no module has probed it"
            " since sqlprobe started (modules: mysql_other, mysql_prod)\n",
        )
    }
