"""What a conversion produces (targets, query sets, notes on what has no equivalent) and writing it out."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


class Unreadable(Exception):
    """The input cannot be read as a configuration of the exporter named: one sentence for the user."""


@dataclass
class Conversion:
    """The converted configuration, built up key by key, and every note on what was left out or changed."""

    source: str  # what was converted, for the files' header
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_sets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, path: str, message: str) -> None:
        """Record that the input's ``path`` has no (or an inexact) equivalent, and what to do instead."""
        self.notes.append(f"{path}: {message}")

    def write(self, directory: Path, replace: bool = False) -> tuple[Path, Path]:
        """Write targets.yml and queries.yml into ``directory``; their paths. Unreadable if they exist, unless told."""
        existing = [path for path in (directory / "targets.yml", directory / "queries.yml") if path.exists()]
        if existing and not replace:
            raise Unreadable(f"{existing[0]} exists already: give --force to replace it, or another --out")
        directory.mkdir(parents=True, exist_ok=True)
        header = f"# Converted by sqlprobe-convert from {self.source}.\n"
        if self.notes:
            header += "# Not converted or converted with a difference (sqlprobe-convert printed these too):\n"
            header += "".join(f"#   {line}\n" for note in self.notes for line in note.splitlines())
        targets_path, queries_path = directory / "targets.yml", directory / "queries.yml"
        targets_path.write_text(header + _dump({"targets": self.targets}), encoding="utf-8")
        queries_path.write_text(header + _dump({"namespace": "", "query_sets": self.query_sets}), encoding="utf-8")
        return targets_path, queries_path


def read_yaml(path: Path, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """The YAML document at ``path``; Unreadable with one sentence if it cannot be read."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, loader)  # never an unsafe loader: SafeLoader or one derived from it
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise Unreadable(f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        # Its file and line, never the line itself: it may hold a password.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise Unreadable(f"{path} is not valid YAML{where}: {problem}") from None


def target_name(name: str) -> str:
    """``name`` as a sqlprobe target or query set name (letters, digits, ``_ . : -``)."""
    return _NAME.sub("_", name) or "_"


class _Dumper(yaml.SafeDumper):
    """Writes a list shared by several metrics out in full each time: no &anchors and *aliases for people to read."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # SQL over several lines stays readable: as a literal block.
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _text)


def unused_name(name: str, taken: Mapping[str, object]) -> str:
    """``name``, or ``name_2``, ``name_3``… if it is taken already."""
    if name not in taken:
        return name
    number = 2
    while f"{name}_{number}" in taken:
        number += 1
    return f"{name}_{number}"


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
