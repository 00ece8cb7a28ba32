"""The query library shipped inside the package, and where sqlprobe looks for its files by default."""

from importlib.resources import as_file, files
from pathlib import Path

# The shipped query sets (docs/query-library.md): part of the installed package, so an installed sqlprobe finds them
# from any directory. A checkout's queries.yml is a link to this file.
_SHIPPED = files("app.config").joinpath("queries.yml")


def shipped_queries() -> Path:
    """The path of the shipped queries.yml (a real file: the package is installed unzipped)."""
    with as_file(_SHIPPED) as path:
        return Path(path)


def default_queries(targets: Path) -> Path:
    """queries.yml beside ``targets`` (the targets file) if there is one, else the shipped library: relative paths in
    targets.yml start at its directory too, and a working directory elsewhere must not pick another file."""
    beside = targets.parent / "queries.yml"
    return beside if beside.exists() else shipped_queries()
