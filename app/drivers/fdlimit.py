"""File descriptors: the soft RLIMIT_NOFILE raised to the hard one at start, and how many the config may need.

Go exporters never meet "Too many open files" because the Go runtime raises the soft limit at start; a Python
process keeps the usual 1024, which a fleet of a few hundred targets exceeds.
"""

import resource
from dataclasses import dataclass
from pathlib import Path

from app.config import Config
from app.drivers.engine_cache import MAX_OVERFLOW, POOL_SIZE

# Per target: its pool's connections at most (pool_size + max_overflow), each one socket.
DESCRIPTORS_PER_TARGET = POOL_SIZE + MAX_OVERFLOW
# The process's own: standard streams, the listening socket, the event loop, log files, libraries, a KILL or
# cancel connection per stopping thread, a reload reading its files.
DESCRIPTORS_RESERVED = 64


@dataclass(frozen=True, slots=True)
class NofileLimit:
    """The soft RLIMIT_NOFILE found at start, the soft limit now, and the hard one."""

    found: int
    soft: int
    hard: int


def raise_soft_limit() -> NofileLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped by fs.nr_open when the hard one is unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            wanted = soft
    else:
        wanted = soft
    return NofileLimit(soft, wanted, hard)


def hard_limit() -> int:
    """The soft limit sqlprobe will run with: the hard limit (or fs.nr_open if that is unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft, _nr_open() if hard == resource.RLIM_INFINITY else hard)


def descriptors_needed(config: Config, max_connections: int) -> int:
    """Descriptors the config could hold at once: every target's full pool, every HTTP client, the reserve."""
    return len(config.targets) * DESCRIPTORS_PER_TARGET + max_connections + DESCRIPTORS_RESERVED


def shortfall_warning(config: Config, max_connections: int, limit: int) -> str | None:
    """A sentence when ``limit`` descriptors may not be enough for ``config``; None when they are."""
    needed = descriptors_needed(config, max_connections)
    if needed <= limit:
        return None
    return (
        f"{len(config.targets)} targets could hold {len(config.targets) * DESCRIPTORS_PER_TARGET} connections "
        f"({DESCRIPTORS_PER_TARGET} per target), plus {max_connections} HTTP connections (--max-connections) and "
        f"{DESCRIPTORS_RESERVED} of sqlprobe's own: {needed} file descriptors, more than the limit of {limit}; "
        "probes past it fail with 'Too many open files'. Raise the hard limit (LimitNOFILE= in a systemd unit, "
        "ulimit -Hn, docker --ulimit nofile=) or see docs/limits.md"
    )


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1024 * 1024
