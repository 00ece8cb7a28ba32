"""CPU and memory of processes as the kernel counts them (/proc), read from outside."""

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of all threads of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces and parentheses: fields are counted after its closing ")".
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS


@dataclass(frozen=True)
class Snapshot:
    """CPU counters of everyone taking part, at one moment."""

    wall: float
    exporter: float
    databases: float
    generator: float
    machine: float
    comparison: float  # the Go exporter's, when it runs beside sqlprobe (tests/bench/go_exporter.py); else 0

    @classmethod
    def take(cls, exporter_pid: int, database_pids: Sequence[int], comparison_pid: int | None = None) -> "Snapshot":
        """Read every counter now."""
        return cls(
            wall=time.monotonic(),
            exporter=cpu_seconds(exporter_pid),
            databases=sum(cpu_seconds(pid) for pid in database_pids),
            generator=time.process_time(),
            machine=machine_busy_seconds(),
            comparison=cpu_seconds(comparison_pid) if comparison_pid is not None else 0.0,
        )

    def until(self, later: "Snapshot") -> Mapping[str, float]:
        """Seconds of wall clock and of CPU per party between this snapshot and ``later``."""
        return {
            "wall_s": later.wall - self.wall,
            "exporter_cpu_s": later.exporter - self.exporter,
            "db_cpu_s": later.databases - self.databases,
            "generator_cpu_s": later.generator - self.generator,
            "machine_cpu_s": later.machine - self.machine,
            "go_cpu_s": later.comparison - self.comparison,
        }
