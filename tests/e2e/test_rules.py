"""examples/alerts.yml: clean for promtool, and every alert unit-tested firing and quiet (tests/rules/)."""

import subprocess
from typing import Any

import yaml

from tests.paths import ROOT_DIR, TESTS_DIR

ROOT = ROOT_DIR
RULES = ROOT / "examples" / "alerts.yml"
RULE_TESTS = TESTS_DIR / "rules" / "alerts_test.yml"


def _promtool(promtool: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *arguments], capture_output=True, text=True, timeout=60)


def test_shipped_rules_pass_promtool_check_rules(promtool: str) -> None:
    checked = _promtool(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_shipped_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    tested = _promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert (alerts - fired, alerts - quiet) == (set(), set())
