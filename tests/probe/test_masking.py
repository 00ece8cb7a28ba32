"""A password is masked where it stands, not wherever its text happens to appear: no guessing it through a host name."""

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from app.config.dsn_secrets import masked
from tests.helpers import ITEMS_SET, client_for, metric, target, write_config
from tests.probe.test_modules import write_modules

PASSWORD = "opensesame42"


@pytest.fixture
def unresolvable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names under .test are unknown to the resolver (as they are to any DNS), without asking one; the names asked."""
    asked: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".test"):
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_guess_of_the_password_as_a_host_name_is_answered_as_any_other_name(
    tmp_path: Path, unresolvable: list[str]
) -> None:
    module = {
        "dsn": f"mysql+pymysql://exporter:{PASSWORD}@{{address}}/",
        "query_sets": ["items"],
        "allow": ["*.db.example.test"],
        "timeout": "5s",
    }
    config = write_modules(tmp_path, {"m": module}, {"items": ITEMS_SET})
    with client_for(config) as client:

        def answer(guess: str) -> str:
            address = f"{guess}.db.example.test"
            debug = client.get("/probe", params={"target": address, "module": "m", "debug": "true"}).text
            # What differs between two guesses: the name each one asked for, and how long each step took.
            lines = [re.sub(r"[0-9.]+s\b", "Ts", line) for line in debug.replace(guess, "GUESS").splitlines()]
            lines = [
                line for line in lines if not line.startswith(("probe_duration_seconds", "sqlprobe_query_duration"))
            ]
            return "\n".join(lines)

        right, wrong = answer(PASSWORD), answer("notthepass00")
    assert unresolvable == [f"{PASSWORD}.db.example.test", "notthepass00.db.example.test"]
    assert "Can't connect to MySQL server on 'GUESS.db.example.test'" in right, right
    assert "***.db.example.test" not in right
    assert right == wrong


def test_an_unresolvable_host_name_is_reported_as_such(tmp_path: Path, unresolvable: list[str]) -> None:
    dsn = f"mysql+pymysql://exporter:{PASSWORD}@nowhere.db.example.test:3306/"
    config = write_config(tmp_path, {"db": target(dsn, "one")}, {"one": {"one": metric("select 1 as v", "v")}})
    with client_for(config) as client:
        debug = client.get("/probe", params={"target": "db", "debug": "true"}).text
    assert unresolvable == ["nowhere.db.example.test"]
    assert (
        "Can't connect to MySQL server on 'nowhere.db.example.test'\"): the host name could not be resolved"
        " (Name or service not known)"
    ) in debug, debug
    assert "Unknown error" not in debug
    assert PASSWORD not in debug


def test_a_reload_that_meets_a_dsn_of_the_wrong_yaml_type_never_quotes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, {"db": target("sqlite://", "one")}, {"one": {"one": metric("select 1 as v", "v")}})
    with client_for(config) as client:
        (tmp_path / "targets.yml").write_text(
            f'targets:\n  db:\n    dsn: !!float "mysql+pymysql://exporter:{PASSWORD}@127.0.0.1:3306/"\n'
            "    query_sets: [one]\n"
        )
        answer = client.post("/-/reload")
    assert answer.text.endswith(
        "targets.yml:3: targets.db.dsn: the value (not quoted: it may hold a password) is not a valid !!float\n"
    ), answer.text
    assert "reload_failed" in {getattr(record, "event", None) for record in caplog.records}
    assert PASSWORD not in answer.text + caplog.text


@pytest.mark.parametrize(
    ("message", "public", "shown"),
    [
        ("on 'opensesame42.db.example.test'", ["opensesame42.db.example.test"], "on 'opensesame42.db.example.test'"),
        ("echoed opensesame42 on 'db1'", ["db1"], "echoed *** on 'db1'"),
        # A public name inside the password does not shield it, nor does one that ends inside it.
        ("echoed opensesame42", ["sesame"], "echoed ***"),
        ("echoed xopensesame42 on 'xopen'", ["xopen"], "echoed x*** on 'xopen'"),
        ("escaped opensesame42%21 twice: opensesame42!", [], "escaped *** twice: ***"),
    ],
)
def test_the_password_is_starred_where_it_stands_not_inside_a_public_name(
    message: str, public: list[str], shown: str
) -> None:
    password = "opensesame42!" if "escaped" in message else PASSWORD
    assert masked(message, password, public) == shown
