"""promtool accepts what sqlprobe serves, on success, on failure and on its own /metrics."""

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import ITEMS_SET, client_for, target, write_config
from tests.servers import MariaDB


def promtool_check(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``text``."""
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


def test_promtool_accepts_probes_and_own_metrics(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, promtool: str
) -> None:
    odd = {
        "odd_labels": {
            "query": "select 'say \"hi\"\\n' as name, 1 as n union all select null, 2",
            "type": "counter",
            "description": "labels that need escaping",
            "labels": ["name"],
            "value": "n",
        }
    }
    targets = {
        "good": target(fleet[0].dsn, "items", "odd"),
        "dead": target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items"),
    }
    config = write_config(tmp_path, targets, {"items": ITEMS_SET, "odd": odd})
    with client_for(config) as client:
        pages = {name: client.get("/probe", params={"target": name}).text for name in targets}
        pages["/metrics"] = client.get("/metrics").text
    assert "query_exporter_odd_labels_total" in pages["good"]
    for name, text in pages.items():
        result = promtool_check(promtool, text)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), name
