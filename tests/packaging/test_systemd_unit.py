"""packaging/sqlprobe.service: a unit systemd accepts, hardened to an exposure systemd rates OK."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import missing
from tests.paths import ROOT_DIR

UNIT = ROOT_DIR / "packaging" / "sqlprobe.service"


@pytest.fixture
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def test_systemd_accepts_the_unit(analyze: str, tmp_path: Path) -> None:
    # verify checks ExecStart's binary on this host: point it at the sqlprobe of the tests' virtualenv.
    installed = shutil.which("sqlprobe") or str(Path(ROOT_DIR / ".venv" / "bin" / "sqlprobe"))
    unit = tmp_path / "sqlprobe.service"
    unit.write_text(UNIT.read_text().replace("/opt/sqlprobe/bin/sqlprobe", installed))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_unit_is_rated_ok_by_systemds_security_analysis(analyze: str) -> None:
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rating = re.search(r"Overall exposure level for sqlprobe\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert rating is not None, result.stdout[-500:]
    assert float(rating.group(1)) <= 2.0
    assert rating.group(2) == "OK"


def test_the_unit_reloads_with_sighup_and_runs_as_a_dynamic_user_without_capabilities() -> None:
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^[A-Za-z]+=", line))
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["DynamicUser"] == "yes"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["WorkingDirectory"] == "/etc/sqlprobe"


def test_the_unit_leaves_sqlprobe_the_proc_files_its_process_metrics_read() -> None:
    # ProcSubset=pid hides /proc/stat: prometheus-client's process collector then reads no boot time and reports
    # nothing, so process_cpu_seconds_total, process_resident_memory_bytes and process_open_fds were gone.
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^[A-Za-z]+=", line))
    assert settings.get("ProcSubset", "all") == "all"
