"""No password shows on any page, in any metric, error or log line, whatever happens to the probe."""

import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import ITEMS_SET, client_for, target, write_config
from tests.servers import MariaDB

SLOW = {"slow": {"query": "select sleep(5) as s", "type": "gauge", "description": "d", "value": "s"}}


def test_passwords_never_appear_on_pages_metrics_or_logs(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[0]
    wrong = "wrong-" + server.password[::-1]
    unreachable = "closed-" + server.password[::-1]
    hung = "silent-" + server.password[::-1]
    # A password with every character that means something in a URL, given through ${VAR}.
    special = "p@ss/w#rd%41:?&=+ " + server.password[::-1]
    server.execute(
        f"create or replace user 'special'@'%' identified by '{special}'", "grant select on probe.* to 'special'@'%'"
    )
    secrets = [server.password, wrong, unreachable, hung, special, quote(special, safe=""), special[:8]]
    targets = {
        "special": target(f"mysql+pymysql://special:${{SPECIAL_PASSWORD}}@127.0.0.1:{server.port}/probe", "items"),
        "special_refused": target(f"mysql+pymysql://special:${{SPECIAL_PASSWORD}}@127.0.0.1:{closed_port}/", "items"),
        "good": target(server.dsn, "items"),
        "slow": target(server.dsn, "slow"),
        "wrong_password": target(server.dsn.replace(server.password, wrong), "items"),
        "refused": target(f"mysql+pymysql://exporter:{unreachable}@127.0.0.1:{closed_port}/", "items"),
        "hung": target(f"mysql+pymysql://exporter:{hung}@127.0.0.1:{silent_port}/", "items"),
    }
    config = write_config(tmp_path, targets, {"items": ITEMS_SET, "slow": SLOW}, environ={"SPECIAL_PASSWORD": special})
    caplog.set_level(logging.DEBUG)
    for noisy in ("sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(noisy).setLevel(logging.DEBUG)
    shown: list[str] = []
    try:
        with client_for(config) as client:
            for name in targets:
                for debug in ("false", "true"):
                    response = client.get(
                        "/probe",
                        params={"target": name, "debug": debug},
                        headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"},
                    )
                    assert response.status_code == 200
                    shown.append(response.text)
            # The special password reached the server intact.
            assert "probe_success 1.0" in client.get("/probe", params={"target": "special"}).text
            shown += [client.get(path).text for path in ("/", "/metrics", "/openapi.json")]
    finally:
        for noisy in ("sqlalchemy.engine", "sqlalchemy.pool"):
            logging.getLogger(noisy).setLevel(logging.NOTSET)
    shown += [record.getMessage() for record in caplog.records]
    assert any(record.name.startswith("sqlalchemy.pool") for record in caplog.records)
    assert any(record.name == "app.web" for record in caplog.records)
    # The probes did fail in the ways this test is about, so their errors were rendered.
    everything = "\n".join(shown)
    assert "Access denied for user 'exporter'" in everything
    assert "Can't connect" in everything
    assert "error (timeout)" in everything
    assert "exporter:***@127.0.0.1" in everything
    for secret in secrets:
        assert secret not in everything
