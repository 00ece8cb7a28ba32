"""Inventory files: Prometheus file_sd files listing a module's servers, read again on every refresh.

A file that stops parsing keeps its last good contents (and says so in the log and in sqlprobe_inventory_file_ok);
a file that is gone takes its servers with it.
"""

import contextlib
import glob
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.config.addresses import Address, parse_address
from app.config.model import Module
from app.config.schema import LABEL_NAME_PATTERN
from app.config.validation import at_root, validate
from app.config.yamlfile import YamlDocument, fast_yaml, load_yaml, read_named_file
from app.errors import ConfigError, ConfigProblem

log = logging.getLogger(__name__)

Labels = Mapping[str, str]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[Annotated[str, Field(min_length=1)], ...]
    labels: dict[Annotated[str, Field(pattern=LABEL_NAME_PATTERN)], str] = {}


class _FileSD(RootModel[tuple[_Group, ...]]):
    model_config = ConfigDict(frozen=True)


# One server listed in a file, and its group's labels.
Entry = tuple[Address, Labels]


def read_inventory_file(path: Path) -> tuple[Entry, ...]:
    """The servers ``path`` lists; ConfigError naming the file, line and key path of every problem.

    A YAML file is read first by libyaml without noting lines (100,000 servers in seconds, not a minute); only if
    that reading cannot be used, or finds a problem, is it read again the slow way, which says where.
    """
    if path.suffix != ".json" and (fast := fast_yaml(path)) is not None:
        with contextlib.suppress(ConfigError):
            return _entries(fast)
    return _entries(_load(path))


def _entries(doc: YamlDocument) -> tuple[Entry, ...]:
    problems: list[ConfigProblem] = []
    groups = validate(_FileSD, doc, at_root, problems)
    entries: list[Entry] = []
    for group_index, group in enumerate(groups.root if groups is not None else ()):
        labels = MappingProxyType(dict(group.labels))
        for index, text in enumerate(group.targets):
            try:
                entries.append((parse_address(text), labels))
            except ValueError as error:
                problems.append(doc.problem((group_index, "targets", index), str(error)))
    if problems:
        raise ConfigError(problems)
    return tuple(entries)


def _load(path: Path) -> YamlDocument:
    if path.suffix != ".json":
        return load_yaml(path)
    # As Prometheus does: .json files are JSON (which YAML's parser does not take whole: tabs, for one).
    try:
        data = json.loads(read_named_file(path))
    except ValueError as error:
        line = getattr(error, "lineno", None)
        raise ConfigError([ConfigProblem(str(path), "", f"invalid JSON: {error}", line)]) from None
    except RecursionError:  # json's own parser gives up on deep nesting this way, not with a ValueError
        raise ConfigError([ConfigProblem(str(path), "", "invalid JSON: nested too deeply")]) from None
    return YamlDocument(str(path), data, {})


def inventory_files(module: Module) -> list[str]:
    """The files the module's inventory patterns match now, sorted."""
    return sorted({file for pattern in module.inventory for file in glob.glob(pattern)})


def check_inventory(modules: Iterable[Module]) -> list[ConfigProblem]:
    """Every problem of every inventory file the modules name (for --check-config and start-up)."""
    problems: list[ConfigProblem] = []
    for file in sorted({file for module in modules for file in inventory_files(module)}):
        try:
            read_inventory_file(Path(file))
        except ConfigError as error:
            problems.extend(error.problems)
    return problems


@dataclass(frozen=True, slots=True)
class _FileState:
    digest: str | None  # of the contents last read, parsed or not
    entries: tuple[Entry, ...]  # the last good ones
    ok: bool


class Inventory:
    """The servers each module's inventory files list, as of the last refresh."""

    def __init__(self) -> None:
        self._files: dict[str, _FileState] = {}
        self._listed: Mapping[str, Mapping[Address, Labels]] = {}
        self._lock = threading.Lock()  # one refresh at a time; readers take the mappings as they are

    def refresh(self, modules: Mapping[str, Module]) -> None:
        """Read the files again; a file that no longer parses keeps its last good contents."""
        with self._lock:
            files = {module.name: inventory_files(module) for module in modules.values()}
            states = {file: self._read(file) for file in sorted({f for names in files.values() for f in names})}
            listed: dict[str, dict[Address, Labels]] = {}
            for name, module_files in files.items():
                servers = listed[name] = {}
                for file in module_files:
                    for address, labels in states[file].entries:
                        servers.setdefault(address.with_default_port(modules[name].default_port), labels)
            self._files, self._listed = states, listed

    def _read(self, file: str) -> _FileState:
        previous = self._files.get(file, _FileState(None, (), ok=True))
        try:
            digest = hashlib.sha256(read_named_file(Path(file))).hexdigest()
        except ValueError as error:
            # Gone between glob and read, or unreadable: keep what it listed until it is gone from the glob too.
            log.warning("inventory file %s cannot be read: %s", file, error, extra={"event": "inventory_unreadable"})
            return _FileState(previous.digest, previous.entries, ok=False)
        if digest == previous.digest:
            return previous
        try:
            entries = read_inventory_file(Path(file))
        except ConfigError as error:
            problems = [str(problem) for problem in error.problems]
            log.error(
                "inventory file %s is invalid, its last good contents (%d servers) stay:\n  %s",
                file,
                len(previous.entries),
                "\n  ".join(problems),
                extra={"event": "inventory_invalid", "file": file, "problems": problems},
            )
            return _FileState(digest, previous.entries, ok=False)
        log.info(
            "inventory file %s: %d servers",
            file,
            len(entries),
            extra={"event": "inventory_read", "file": file, "servers": len(entries)},
        )
        return _FileState(digest, entries, ok=True)

    def labels(self, module: str, address: Address) -> Labels | None:
        """The labels of ``address`` if an inventory file of ``module`` lists it, else None."""
        return self._listed.get(module, {}).get(address)

    def servers(self, module: str) -> Mapping[Address, Labels]:
        """Every server the module's files list, with its labels."""
        return self._listed.get(module, {})

    def file_states(self) -> dict[str, bool]:
        """Whether each file matched at the last refresh parsed (True) or keeps older contents (False)."""
        return {file: state.ok for file, state in self._files.items()}
