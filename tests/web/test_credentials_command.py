"""credentials_command: credentials leased from a command (a Vault-like stand-in that makes a fresh MariaDB user
per run), renewed before they expire, and never shown; commands that hang, fail or print garbage fail the probe
with a reason."""

import logging
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest

from app.errors import ConfigError
from tests.helpers import ITEMS_SET, client_for, parse_samples, value, wait_until, write_config
from tests.probe.test_modules import write_modules
from tests.servers import EXPORTER_USER, MariaDB

# A stand-in for `vault read -format=json database/creds/ROLE`: a new user per run (as root over TCP), the user of
# the lease before last dropped (Vault revokes expired leases), Vault's JSON printed with a short lease.
VAULT_LIKE = """\
import json, secrets, sys
import pymysql
port, runs, lease = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
number = sum(1 for _ in open(runs)) + 1 if __import__("os").path.exists(runs) else 1
user, password = f"lease{number}", "v-" + secrets.token_hex(16)
root = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
with root.cursor() as cursor:
    cursor.execute(f"create user '{user}'@'%' identified by '{password}'")
    cursor.execute(f"grant select on probe.* to '{user}'@'%'")
    if number > 2:
        cursor.execute(f"drop user if exists 'lease{number - 2}'@'%'")
with open(runs, "a") as out:
    out.write(password + "\\n")
print(json.dumps({"request_id": "r", "lease_id": f"database/creds/probe/{number}", "lease_duration": lease,
                  "renewable": True, "data": {"username": user, "password": password}, "warnings": None}, indent=2))
"""


def _script(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def _leased_target(server: MariaDB, command: list[str], **keys: object) -> dict[str, object]:
    dsn = f"mysql+pymysql://nobody@127.0.0.1:{server.port}/probe"
    return {"dsn": dsn, "query_sets": ["items"], "credentials_command": command, "timeout": "3s", **keys}


def test_probes_succeed_across_leases_with_one_run_per_lease_and_no_password_shown(
    tmp_path: Path, fleet: Sequence[MariaDB], caplog: pytest.LogCaptureFixture
) -> None:
    server = fleet[0]
    runs = tmp_path / "runs"
    command = [sys.executable, _script(tmp_path, "vault.py", VAULT_LIKE), str(server.port), str(runs), "2"]
    config = write_config(tmp_path, {"leased": _leased_target(server, command)}, {"items": ITEMS_SET})
    caplog.set_level(logging.DEBUG)
    expected = server.query("select count(*) from items")[0][0]
    shown: list[str] = []
    with client_for(config) as client:
        started = time.monotonic()
        successes = 0
        for _ in range(40):  # about 8 s: four leases of 2 s
            samples = parse_samples(client.get("/probe", params={"target": "leased"}).text)
            successes += value(samples, "probe_success") == 1
            assert value(samples, "query_exporter_items_created_total") == expected
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        shown += [client.get("/probe", params={"target": "leased", "debug": "true"}).text]
        shown += [client.get(path).text for path in ("/", "/logs", "/metrics")]
        own = parse_samples(shown[-1])
    passwords = runs.read_text().split()
    assert successes == 40
    # Renewed at 80% of each 2 s lease: about once per 1.6 s, and never once per probe.
    assert elapsed / 2 - 1 <= len(passwords) <= elapsed / 1.6 + 2
    assert value(own, "sqlprobe_credentials_fetch_total", target="leased", module="", result="success") == len(
        passwords
    )
    assert value(own, "sqlprobe_credentials_age_seconds", target="leased", module="") < 2
    everything = "\n".join(shown + [record.getMessage() for record in caplog.records])
    for password in passwords:
        assert password not in everything


def _named(directory: Path) -> str:
    """How messages name the command _probe_failure runs (its arguments, long here, cut to 120 characters)."""
    return f"({Path(sys.executable).name} {directory / 'command.py'} {directory})"[:121]


def _probe_failure(tmp_path: Path, server: MariaDB, script: str, timeout: str = "2") -> tuple[str, float, str]:
    command = [sys.executable, _script(tmp_path, "command.py", script), str(tmp_path)]
    config = write_config(tmp_path, {"leased": _leased_target(server, command)}, {"items": ITEMS_SET})
    with client_for(config) as client:
        started = time.monotonic()
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": timeout}
        samples = parse_samples(client.get("/probe", params={"target": "leased"}, headers=headers).text)
        took = time.monotonic() - started
        debug = client.get("/probe", params={"target": "leased", "debug": "true"}, headers=headers).text
        assert value(samples, "probe_success") == 0
        own = client.get("/metrics").text
    return debug, took, own


def test_a_hanging_command_fails_the_probe_in_time_naming_the_command_and_is_killed(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    hang = "import os, sys, time\nopen(sys.argv[1] + '/pid', 'a').write(f'{os.getpid()}\\n')\ntime.sleep(60)\n"
    debug, took, own = _probe_failure(tmp_path, fleet[0], hang)
    assert f"the credentials command {_named(tmp_path)}…) did not finish within its timeout of" in debug
    assert "killed" in debug
    assert took < 2.5  # the scrape's own timeout of 2 s, not the command's 60
    pids = [int(pid) for pid in (tmp_path / "pid").read_text().split()]
    assert pids
    for pid in pids:
        assert wait_until(partial(_gone, pid), 5)
    samples = parse_samples(own)
    assert value(samples, "sqlprobe_credentials_fetch_total", target="leased", module="", result="timeout") == 2


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_failing_command_fails_the_probe_with_its_status_and_first_stderr_line_scrubbed(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    secret = "s3cr3t-token-value"
    fail = (
        f"import sys\nprint({secret!r})\nprint('error: token {secret} was refused', file=sys.stderr)\n"
        "print('second line', file=sys.stderr)\nsys.exit(3)\n"
    )
    debug, _, own = _probe_failure(tmp_path, fleet[0], fail)
    assert f"the credentials command {_named(tmp_path)}…) failed (exit status 3): error: token *** was refused" in debug
    assert "second line" not in debug
    assert secret not in debug + own
    samples = parse_samples(own)
    assert value(samples, "sqlprobe_credentials_fetch_total", target="leased", module="", result="failed") == 2


def test_a_command_printing_garbage_fails_the_probe_with_a_sentence(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    debug, _, own = _probe_failure(tmp_path, fleet[0], "print('first-secret-line')\nprint('second-secret-line')\n")
    assert (
        f"the credentials command {_named(tmp_path)}…) printed neither a password on one line nor a JSON object"
        in debug
    )
    assert "secret-line" not in debug + own


def test_a_modules_command_gets_the_probed_address_and_its_one_line_password(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    (tmp_path / "password").write_text(server.password)
    script = (
        "import os, sys\nopen(sys.argv[1] + '/address', 'a').write(os.environ['SQLPROBE_ADDRESS'] + '\\n')\n"
        "print(open(sys.argv[1] + '/password').read())\n"
    )
    command = [sys.executable, _script(tmp_path, "token.py", script), str(tmp_path)]
    module = {
        "dsn": f"mysql+pymysql://{EXPORTER_USER}@{{address}}/probe",
        "query_sets": ["items"],
        "allow": [f"127.0.0.1:{server.port}"],
        "credentials_command": command,
        "credentials_ttl": "15m",
    }
    config = write_modules(tmp_path, {"iam": module}, {"items": ITEMS_SET})
    address = f"127.0.0.1:{server.port}"
    with client_for(config) as client:
        for _ in range(3):
            samples = parse_samples(client.get("/probe", params={"module": "iam", "target": address}).text)
            assert value(samples, "probe_success") == 1
        own = parse_samples(client.get("/metrics").text)
    assert (tmp_path / "address").read_text().split() == [address]  # once: the 15 minutes are not over
    assert value(own, "sqlprobe_credentials_fetch_total", target="", module="iam", result="success") == 1


def test_a_command_that_is_not_there_is_a_config_error_and_is_not_run(tmp_path: Path, fleet: Sequence[MariaDB]) -> None:
    server = fleet[0]
    targets = {
        "missing": _leased_target(server, ["sqlprobe-no-such-command", "read"]),
        "not_executable": _leased_target(server, ["./plain.txt"]),
        "both": _leased_target(server, [sys.executable], dsn=server.dsn),
    }
    (tmp_path / "plain.txt").write_text("echo hi\n")
    with pytest.raises(ConfigError) as raised:
        write_config(tmp_path, targets, {"items": ITEMS_SET})
    text = str(raised.value)
    assert "targets.missing.credentials_command[0]: 'sqlprobe-no-such-command' is not on PATH" in text
    assert "targets.not_executable.credentials_command[0]: './plain.txt' is not an executable file" in text
    assert "targets.both.credentials_command: the dsn has a password too: give only one" in text
