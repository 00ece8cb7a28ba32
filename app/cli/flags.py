"""The command line's flags: each value checked and turned into what it means, or a sentence naming the flag."""

import argparse
import ipaddress
import re
import socket
import sys
from pathlib import Path
from typing import NoReturn

from app import __version__
from app.config.schema import duration_seconds
from app.probe.history import DEFAULT_HISTORY_LIMIT
from app.probe.prober import DEFAULT_MAX_MODULE_PROBES, DEFAULT_MAX_PROBES
from app.web.app import DEFAULT_IDLE_ENGINE_TIMEOUT, DEFAULT_MAX_WORKERS, DEFAULT_REFRESH_INTERVAL
from app.web.http_protocol import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
)
from app.web.log_format import LOG_FORMATS


def parse_bind(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:9104`` for IPv6) into its parts; the host must be an address or resolve to one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT, e.g. 0.0.0.0:9104")
    host = host.strip("[]") or "0.0.0.0"
    if not _is_address(host) and not _HOST_NAME.fullmatch(host):
        raise argparse.ArgumentTypeError(f"{value!r}: {host!r} is neither an IP address nor a host name")
    try:
        # Now rather than when uvicorn binds, where a bad host ends in a traceback.
        socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise argparse.ArgumentTypeError(f"{value!r}: {host!r} is not an address to listen on ({reason})") from None
    return host, int(port)


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _threads(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} threads cannot run a probe: give 1 or more")
    return count


def _duration(value: str) -> float:
    try:
        return duration_seconds(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_SIZE_UNITS = {"kib": 1024, "mib": 1024**2, "b": 1}


def _size(value: str) -> int:
    """A byte count: 65536, 64KiB or 1MiB."""
    text = value.strip().lower()
    unit = next((unit for unit in _SIZE_UNITS if text.endswith(unit)), "")
    number = text.removesuffix(unit).strip()
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size such as 65536, 64KiB or 1MiB")
    return int(number) * _SIZE_UNITS.get(unit, 1)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 0 or more")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad value exits 1, as a bad config does."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The sqlprobe argument parser."""
    parser = _Parser(prog="sqlprobe", description="Prometheus exporter probing SQL servers.")
    parser.add_argument("--targets", type=Path, default=Path("targets.yml"), help="targets file (default: %(default)s)")
    parser.add_argument(
        "--queries",
        type=Path,
        help="queries file (default: queries.yml beside the targets file if there is one, else the shipped library)",
    )
    parser.add_argument(
        "--bind", type=parse_bind, default=("0.0.0.0", 9104), help="HOST:PORT to listen on (default: 0.0.0.0:9104)"
    )
    parser.add_argument("--check-config", action="store_true", help="validate both files, print any problem, and exit")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="(default: %(default)s)"
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line for log pipelines (default: %(default)s)",
    )
    parser.add_argument(
        "--max-threads",
        type=_threads,
        default=DEFAULT_MAX_WORKERS,
        help=(
            "threads for targets whose driver blocks (SQLite, drivers without asyncio); "
            "MySQL and PostgreSQL probes use none (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--web-config",
        type=Path,
        help="TLS and basic auth of sqlprobe's own HTTP, in the exporter toolkit's web.config.yml format",
    )
    parser.add_argument(
        "--idle-engine-timeout",
        type=_duration,
        default=DEFAULT_IDLE_ENGINE_TIMEOUT,
        metavar="DURATION",
        help="dispose a target's engine and connections when no probe used it this long (default: 15m)",
    )
    parser.add_argument(
        "--max-header-size",
        type=_size,
        default=DEFAULT_MAX_HEADER_BYTES,
        metavar="SIZE",
        help="largest request line and headers accepted, before authentication; larger gets 431 (default: 64KiB)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_duration,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="DURATION",
        help="a client must send its request line and headers within this; else 408 and closed (default: 5s)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="open HTTP connections at most; the next gets 503 and is closed (default: %(default)s)",
    )
    parser.add_argument(
        "--max-probes-in-flight",
        type=_positive,
        default=DEFAULT_MAX_PROBES,
        metavar="N",
        help="probes running at once at most; the next gets 503 with a sentence (default: %(default)s)",
    )
    parser.add_argument(
        "--max-module-probes-in-flight",
        type=_positive,
        default=DEFAULT_MAX_MODULE_PROBES,
        metavar="N",
        help="probes of one module's targets running at once at most; the next gets 503 (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh-interval",
        type=_duration,
        default=DEFAULT_REFRESH_INTERVAL,
        metavar="DURATION",
        help="read inventory files again, and check password and TLS files for a change, this often (default: 30s)",
    )
    parser.add_argument(
        "--history-limit",
        type=_count,
        default=DEFAULT_HISTORY_LIMIT,
        metavar="N",
        help="failed probes kept for the status page and /logs, besides each target's last (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"sqlprobe {__version__}")
    return parser
