"""docs/status-page.png: the status page of a small fleet, as headless Chromium shows it.

python -m tests.screenshot [docs/status-page.png]

sqlprobe serves the shipped queries.yml to SQLite targets (healthy), a MySQL port where nothing listens (refused),
one that accepts TCP and never answers (hung), a set with a mistyped column, and a target not probed yet.
"""

import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml

from tests.chromium import chromium, chromium_paths
from tests.helpers import metric, target
from tests.served import serve
from tests.servers import free_port, silent_listener

ROOT = Path(__file__).parent.parent


def main(argv: list[str]) -> None:
    """Serve the fleet, probe it, and save the page's screenshot."""
    output = Path(argv[0]) if argv else ROOT / "docs" / "status-page.png"
    paths = chromium_paths()
    if paths is None:
        sys.exit("screenshot: install chromium and chromium-driver first")
    query_sets: dict[str, Any] = yaml.safe_load((ROOT / "queries.yml").read_text())["query_sets"]
    query_sets["inventory"] = {"stock_level": metric("select 'widgets' as item, 12 as qty", "quantity", "item")}
    with silent_listener() as silent_port, tempfile.TemporaryDirectory(prefix="sqlprobe-screenshot-") as tmp:
        mysql = "mysql+pymysql://exporter:secret@127.0.0.1:{}/"
        targets = {
            "demo": target("sqlite://", "sqlite_demo"),
            "shop-eu": target("sqlite://", "sqlite_demo"),
            "shop-us": target("sqlite://", "sqlite_demo"),
            "orders-primary": target(mysql.format(free_port()), "mysql_overview"),
            "billing": target(mysql.format(silent_port), "mysql_overview", timeout="2s"),
            "inventory": target("sqlite://", "sqlite_demo", "inventory"),
            "reports-replica": target(mysql.format(free_port()), "mysql_overview"),
        }
        with serve(Path(tmp), targets, query_sets) as served, chromium(paths, 1280, 620) as browser:
            for name in targets:
                if name != "reports-replica":
                    httpx.get(f"{served.url}/probe", params={"target": name}, timeout=10)
            browser.get(f"{served.url}/")
            output.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(output))
    print(f"screenshot: wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
