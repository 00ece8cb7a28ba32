"""Command-line values are checked like config: a bad one exits 1 with a sentence naming the flag."""

import subprocess
import sys

import pytest

from app.cli import main
from tests.paths import ROOT_DIR

ROOT = ROOT_DIR
CONFIGS = ROOT / "tests" / "configs"

# Flags with the sentence each bad value gets; none of them reaches a DNS server (no name to resolve).
BAD_FLAGS = {
    "max_threads_zero": (
        ["--max-threads", "0"],
        "argument --max-threads: 0 threads cannot run a probe: give 1 or more",
    ),
    "max_threads_negative": (
        ["--max-threads", "-3"],
        "argument --max-threads: -3 threads cannot run a probe: give 1 or more",
    ),
    "max_threads_word": (["--max-threads", "many"], "argument --max-threads: 'many' is not a whole number"),
    "bind_without_port": (["--bind", "127.0.0.1"], "argument --bind: '127.0.0.1' is not HOST:PORT, e.g. 0.0.0.0:9104"),
    "bind_port_out_of_range": (
        ["--bind", "127.0.0.1:70000"],
        "argument --bind: '127.0.0.1:70000' is not HOST:PORT, e.g. 0.0.0.0:9104",
    ),
    "bind_bad_host": (
        ["--bind", "bad host!:9104"],
        "argument --bind: 'bad host!:9104': 'bad host!' is neither an IP address nor a host name",
    ),
    "duration_zero": (
        ["--idle-engine-timeout", "0s"],
        "argument --idle-engine-timeout: '0s' is not a positive duration such as 500ms, 10s or 15m",
    ),
    "duration_unknown_unit": (
        ["--idle-engine-timeout", "10x"],
        "argument --idle-engine-timeout: '10x' is not a duration such as 500ms, 10s or 1m",
    ),
}


def _sqlprobe(*args: str) -> subprocess.CompletedProcess[str]:
    config = ["--targets", str(CONFIGS / "basic_targets.yml"), "--queries", str(CONFIGS / "queries.yml")]
    return subprocess.run(
        [sys.executable, "-m", "app", *config, "--check-config", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SQLPROBE_TEST_PASSWORD": "x"},
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(("args", "sentence"), BAD_FLAGS.values(), ids=list(BAD_FLAGS))
def test_a_bad_command_line_value_exits_1_with_a_sentence_naming_the_flag(
    args: list[str], sentence: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The entry point itself, in this process: a subprocess per case would cost a second each.
    with pytest.raises(SystemExit) as exited:
        main([*args, "--check-config"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"sqlprobe: {sentence}"


def test_the_process_exits_1_on_a_bad_flag_without_a_traceback() -> None:
    result = _sqlprobe("--max-threads", "0")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"sqlprobe: {BAD_FLAGS['max_threads_zero'][1]}"
    assert "Traceback" not in result.stderr


def test_good_command_line_values_pass_to_the_config_check() -> None:
    result = _sqlprobe("--max-threads", "1", "--bind", "[::1]:9104", "--idle-engine-timeout", "90s")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
