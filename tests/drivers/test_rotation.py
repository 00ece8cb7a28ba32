"""Secrets that rotate: a changed password_file replaces the engines that use it within the refresh interval."""

import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.drivers.test_tls import Certificates, certificates  # noqa: F401 - the fixture, shared with the TLS tests
from tests.helpers import ITEMS_SET, client_for, parse_samples, value, wait_until
from tests.probe.test_modules import write_modules
from tests.servers import MariaDB

REFRESH = 0.2
USER = "rotating"


@pytest.fixture
def rotating_user(fleet: Sequence[MariaDB]) -> Iterator[MariaDB]:
    """A user of its own on the first server (the fleet's exporter user is shared by every test), dropped after."""
    server = fleet[0]
    server.execute(
        f"create user '{USER}'@'127.0.0.1' identified by 'first-{secrets.token_hex(8)}'",
        f"grant select on probe.* to '{USER}'@'127.0.0.1'",
    )
    try:
        yield server
    finally:
        server.execute(f"drop user '{USER}'@'127.0.0.1'")


def set_password(server: MariaDB, password: str) -> None:
    """Change the user's password and end its sessions, so the next probe must log in again."""
    server.execute(f"alter user '{USER}'@'127.0.0.1' identified by '{password}'")
    for session, *_ in server.root_query(f"select id from information_schema.processlist where user = '{USER}'"):
        server.execute(f"kill {int(session)}")


def test_a_rotated_password_file_takes_effect_without_a_reload_and_an_unreadable_one_keeps_what_works(
    tmp_path: Path, rotating_user: MariaDB
) -> None:
    server = rotating_user
    password_file = tmp_path / "password"
    first = f"first-{secrets.token_hex(8)}"
    set_password(server, first)
    password_file.write_text(first + "\n")
    dsn = f"mysql+pymysql://{USER}@127.0.0.1:{server.port}/probe"
    named = {"dsn": dsn, "password_file": "password", "query_sets": ["items"], "timeout": "3s"}
    module = {**named, "dsn": f"mysql+pymysql://{USER}@{{address}}/probe", "allow": [f"127.0.0.1:{server.port}"]}
    config = write_modules(tmp_path, {"m": module}, {"items": ITEMS_SET}, {"db": named})
    probes = [{"target": "db"}, {"target": f"127.0.0.1:{server.port}", "module": "m"}]
    with client_for(config, refresh_interval=REFRESH) as client:

        def successes() -> list[float]:
            return [value(parse_samples(client.get("/probe", params=probe).text), "probe_success") for probe in probes]

        before = successes()
        second = f"second-{secrets.token_hex(8)}"
        set_password(server, second)
        time.sleep(REFRESH * 3)  # refreshes that find nothing changed
        stale = successes()
        password_file.write_text(second + "\n")
        assert wait_until(lambda: successes() == [1.0, 1.0], 10), successes()

        password_file.unlink()
        time.sleep(REFRESH * 5)
        after_unlink = successes()
        reloads = value(parse_samples(client.get("/metrics").text), "sqlprobe_config_last_reload_successful")
    assert before == [1.0, 1.0]
    assert stale == [0.0, 0.0]
    assert after_unlink == [1.0, 1.0]
    assert reloads == 1.0


def test_a_renewed_tls_file_reloads_the_config_by_itself(
    tmp_path: Path,
    certificates: Certificates,  # noqa: F811 - pytest passes the fixture imported above
) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(certificates.other_ca, ca)
    target = {"dsn": "mysql+pymysql://u@127.0.0.1:1/", "query_sets": ["items"], "tls": {"ca": "ca.pem"}}
    config = write_modules(tmp_path, {}, {"items": ITEMS_SET}, {"db": target})
    loaded = "sqlprobe_config_last_reload_success_timestamp_seconds"
    with client_for(config, refresh_interval=REFRESH) as client:

        def loaded_at() -> float:
            return value(parse_samples(client.get("/metrics").text), loaded)

        before = loaded_at()
        time.sleep(REFRESH * 3)
        unchanged = loaded_at()
        shutil.copy(certificates.ca, tmp_path / "ca.new")
        (tmp_path / "ca.new").replace(ca)
        assert wait_until(lambda: loaded_at() > before, 10)
    assert unchanged == before
