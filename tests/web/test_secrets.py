"""No password shows on any page, in any metric, error or log line, whatever happens to the probe."""

import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

from app.errors import ConfigError
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
    assert any(record.name == "app.web.probe_endpoint" for record in caplog.records)
    # The probes did fail in the ways this test is about, so their errors were rendered.
    everything = "\n".join(shown)
    assert "Access denied for user 'exporter'" in everything
    assert "Can't connect" in everything
    assert "error (timeout)" in everything
    assert "exporter:***@127.0.0.1" in everything
    for secret in secrets:
        assert secret not in everything


def test_password_file_is_read_at_load_and_reload_and_never_shown(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[0]
    wrong = "wrong-" + server.password[::-1]
    password_file = tmp_path / "exporter.password"
    password_file.write_text(server.password + "\n")  # as `echo` writes it
    dsn = server.dsn.replace(f":{server.password}@", "@")
    targets = {"db": {**target(dsn, "items"), "password_file": "exporter.password"}}
    config = write_config(tmp_path, targets, {"items": ITEMS_SET})
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    with client_for(config) as client:

        def look() -> str:
            pages = [client.get("/probe", params={"target": "db", "debug": debug}).text for debug in ("false", "true")]
            pages += [client.get(path).text for path in ("/", "/metrics", "/sd")]
            shown.extend(pages)
            return pages[0]

        assert "probe_success 1.0" in look()
        # The file changes: a reload reads it again, and the target's engine is replaced.
        password_file.write_text(wrong)
        reloaded = client.post("/-/reload")
        shown.append(reloaded.text)
        assert reloaded.text == "config reloaded: 1 targets, 1 query sets, 1 engines disposed\n"
        assert "probe_success 0.0" in look()
        assert "Access denied for user 'exporter'" in shown[-4]
        # A reload that fails keeps the config, and says why without the password.
        password_file.unlink()
        failed = client.post("/-/reload")
        shown.append(failed.text)
        assert failed.status_code == 500
        assert f"targets.db.password_file: cannot read {password_file}: No such file or directory" in failed.text
        assert "probe_success 0.0" in look()
    shown += [record.getMessage() for record in caplog.records]
    everything = "\n".join(shown)
    assert "exporter:***@127.0.0.1" in everything
    for secret in (server.password, wrong):
        assert secret not in everything


def test_a_dsn_with_a_password_and_a_password_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file")
    targets = {"db": {**target("mysql+pymysql://u:in-dsn@127.0.0.1/", "items"), "password_file": "pw"}}
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, targets, {"items": ITEMS_SET})
    assert [str(problem) for problem in raised.value.problems] == [
        f"{tmp_path / 'targets.yml'}:7: targets.db.password_file: the dsn has a password too: give only one"
    ]


def test_query_string_values_never_show_and_a_secret_there_is_refused_at_reload(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[0]
    # A value of a harmless key still never shows: a query string is where people put what they should not.
    marker = "marker-" + server.password[::-1]
    targets = {"db": target(f"{server.dsn}?charset=utf8mb4&program_name={marker}", "items")}
    config = write_config(tmp_path, targets, {"items": ITEMS_SET})
    caplog.set_level(logging.DEBUG)
    for noisy in ("sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(noisy).setLevel(logging.DEBUG)
    shown: list[str] = []
    with client_for(config) as client:
        probe = client.get("/probe", params={"target": "db"}).text
        assert "probe_success 1.0" in probe
        shown += [probe, client.get("/probe", params={"target": "db", "debug": "true"}).text, client.get("/").text]
        assert "/probe?charset=***&amp;program_name=***" in shown[-1]
        # The password moves into the query string: the reload is refused, naming the key and not the value.
        secret = "qs-" + server.password[::-1]
        (tmp_path / "targets.yml").write_text(
            (tmp_path / "targets.yml").read_text().replace(f"program_name={marker}", f"Password={secret}")
        )
        failed = client.post("/-/reload")
        shown.append(failed.text)
        assert failed.status_code == 500
        assert "targets.db.dsn: query-string key 'Password' carries a secret" in failed.text
        shown += [client.get("/probe", params={"target": "db", "debug": "true"}).text, client.get("/").text]
    for noisy in ("sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(noisy).setLevel(logging.NOTSET)
    shown += [record.getMessage() for record in caplog.records]
    assert any(record.name.startswith("sqlalchemy.pool") for record in caplog.records)
    everything = "\n".join(shown)
    for value in (marker, secret, server.password):
        assert value not in everything


def test_a_mysql_password_the_driver_cannot_encode_shows_none_of_its_characters(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    # The driver sends the password as Latin-1 during authentication: its UnicodeEncodeError names the character
    # and where it stands.
    password = "s3cr\u2603tPW"
    dsn = f"mysql+pymysql://exporter:{quote(password)}@127.0.0.1:{fleet[0].port}/"
    config = write_config(tmp_path, {"db": target(dsn, "items", timeout="2s")}, {"items": ITEMS_SET})
    caplog.set_level(logging.DEBUG)
    with client_for(config) as client:
        shown = [
            client.get("/probe", params={"target": "db", "debug": "true"}).text,
            client.get("/").text,
            client.get("/logs", params={"target": "db"}).text,
        ]
    shown += [record.getMessage() for record in caplog.records]
    assert "probe_success: 0" in shown[0]
    assert "the 'latin-1' codec failed on a setting of the target (its DSN, user or password)" in shown[0], shown[0]
    for text in shown:
        assert "\u2603" not in text
        assert "u2603" not in text
        assert "position 4" not in text
