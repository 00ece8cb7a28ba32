"""What a server sends in its error messages is shown as it sent it: starring a password there would tell a hostile
server (on an allowed address) whether the guess it wrote into the message is right."""

from pathlib import Path

import pytest

from tests.drivers.test_clear_text_auth import FakeServer
from tests.helpers import client_for, metric, probe_views, target, value, write_config

GUESSES = "letmein opensesame42 hunter2"


@pytest.mark.parametrize("password", ["opensesame42", "something-else-entirely"], ids=["right_guess", "wrong_guess"])
def test_a_servers_refusal_quoting_guesses_reads_the_same_whether_a_guess_is_the_password(
    tmp_path: Path, password: str
) -> None:
    server = FakeServer("mysql_native_password", None, denial=f"Access denied; {GUESSES}".encode())
    try:
        dsn = f"mysql+pymysql://exporter:{password}@127.0.0.1:{server.port}/probe"
        config = write_config(tmp_path, {"db": target(dsn, "one")}, {"one": {"one": metric("select 1 as v", "v")}})
        with client_for(config) as client:
            views = probe_views(client, "db")
            logs = client.get("/logs").text
    finally:
        server.close()
    assert value(views.samples, "probe_success") == 0.0
    assert f"(1045, 'Access denied; {GUESSES}')" in views.debug
    assert "***" not in views.debug.replace("exporter:***@", "") + logs
