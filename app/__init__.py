"""sqlprobe: a Prometheus exporter that probes a fleet of SQL servers with the operators' own SQL."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sqlprobe")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0.0.0"
