"""Read a YAML file into plain data plus the line of every key path, for error messages."""

import gc
from dataclasses import dataclass
from pathlib import Path

import yaml

from app.errors import ConfigError, ConfigProblem

KeyPath = tuple[str | int, ...]

# Far beyond any real config, and still read in seconds: only aliases of aliases (a "billion laughs") get here.
# A file may always hold as many values as it has characters (it cannot without aliases): a big inventory file.
MAX_VALUES = 100_000


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed YAML file: its data and the 1-based line where each key path starts."""

    file: str
    data: object
    lines: dict[KeyPath, int]

    def problem(self, path: KeyPath, message: str) -> ConfigProblem:
        """A problem at ``path``, with the nearest known line."""
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth])
            if line is not None:
                return ConfigProblem(self.file, format_path(path), message, line)
        return ConfigProblem(self.file, format_path(path), message)


def format_path(path: KeyPath) -> str:
    """Render a key path as ``targets.db-1.query_sets[0]``; control characters in keys are shown escaped."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{_printable(part)}" if text else _printable(part))
    return text


def _printable(key: str) -> str:
    # A key is printed into a terminal or a log line: an escape sequence or line break in it must not act there.
    return key if key.isprintable() else "".join(char if char.isprintable() else repr(char)[1:-1] for char in key)


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path``; every failure becomes a ConfigError that names the file (and line)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigProblem(name, "", f"cannot read file: {error}")]) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:
        # The reader checks the whole text up front and knows only the offending character's offset.
        message = f"invalid YAML: unacceptable character #x{error.character:04x}: {error.reason}"
        at_line = len((text[: error.position] + "x").splitlines())
        raise ConfigError([ConfigProblem(name, "", message, at_line)]) from None
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        problems: list[ConfigProblem] = []
        limit = max(MAX_VALUES, len(text))
        data = None if node is None else _to_data(loader, node, (), lines, problems, name, limit)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([ConfigProblem(name, "", f"invalid YAML: {problem}", line)]) from None
    except RecursionError:
        # Both PyYAML's composer and _to_data recurse once per level of nesting; the reader stopped near the culprit.
        deepest = min(loader.get_mark().line + 1, len(text.splitlines()))
        raise ConfigError([ConfigProblem(name, "", "invalid YAML: nested too deeply", deepest)]) from None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems)
    return YamlDocument(name, data, lines)


def _to_data(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    problems: list[ConfigProblem],
    file: str,
    limit: int,
    ancestors: frozenset[int] = frozenset(),
) -> object:
    lines.setdefault(path, node.start_mark.line + 1)
    if len(lines) > limit:
        message = f"more than {limit} values once aliases are expanded"
        raise ConfigError([ConfigProblem(file, format_path(path), message, lines[path])])
    if id(node) in ancestors:
        problems.append(
            ConfigProblem(file, format_path(path), "an alias refers to a node that contains it", lines[path])
        )
        return None
    ancestors |= {id(node)}
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        mapping: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node, path, problems, file) if isinstance(key_node, yaml.ScalarNode) else None
            if key is _INVALID:
                continue
            if not isinstance(key, str | int | float | bool):
                problems.append(
                    ConfigProblem(file, format_path(path), "keys must be plain scalars", key_node.start_mark.line + 1)
                )
                continue
            key = str(key)
            if key in mapping:
                problems.append(
                    ConfigProblem(file, format_path((*path, key)), "duplicate key", key_node.start_mark.line + 1)
                )
                continue
            lines[(*path, key)] = key_node.start_mark.line + 1
            mapping[key] = _to_data(loader, value_node, (*path, key), lines, problems, file, limit, ancestors)
        return mapping
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_data(loader, item, (*path, index), lines, problems, file, limit, ancestors)
            for index, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    value = _construct(loader, node, path, problems, file)
    return None if value is _INVALID else value


_INVALID = object()


def _construct(
    loader: yaml.SafeLoader, node: yaml.ScalarNode, path: KeyPath, problems: list[ConfigProblem], file: str
) -> object:
    """The scalar's value, or _INVALID (with a problem recorded) when PyYAML cannot build it."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, LookupError, AttributeError, OverflowError):
        # PyYAML's constructors let these through: 2024-13-45, an integer of 5000 digits, !!bool maybe.
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        problems.append(
            ConfigProblem(
                file, format_path(path), f"{_quoted(node.value, path)} is not a valid {tag}", node.start_mark.line + 1
            )
        )
        return _INVALID


# Keys whose values may hold a password (a DSN's user:password@, a password itself): never quoted in an error.
_SECRET_KEY_PARTS = ("dsn", "password", "passwd", "pwd", "secret", "token", "credentials")


def _quoted(text: str, path: KeyPath) -> str:
    """A value that failed its tag, as an error quotes it: not at all if it may hold a secret."""
    keys = " ".join(str(key).lower() for key in path)
    if "@" in text or "://" in text or any(part in keys for part in _SECRET_KEY_PARTS):
        return "the value (not quoted: it may hold a password)"
    return repr(text if len(text) <= 40 else text[:37] + "...")


def read_named_file(path: Path) -> bytes:
    """The bytes of a file a config names (a password, a certificate); ValueError saying why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError:  # a NUL in the name
        raise ValueError(f"cannot read {str(path)!r}: not a valid file name") from None


class _DuplicateKey(Exception):
    """A mapping with a key twice: the slow reading says where."""


if yaml.__with_libyaml__:

    class _FastLoader(yaml.CSafeLoader):
        """libyaml's parser with PyYAML's safe constructor, refusing duplicate keys as load_yaml does."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
            keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
            if len(keys) != len(set(keys)):
                raise _DuplicateKey
            return super().construct_mapping(node, deep)


def fast_yaml(path: Path) -> YamlDocument | None:
    """``path`` read by libyaml, without the line of each key; None when it must be read by load_yaml instead: no
    libyaml, anchors, aliases or tags in the text (load_yaml bounds their expansion), or any failure to read it."""
    if not yaml.__with_libyaml__:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if any(mark in text for mark in "&*!"):
        return None
    # Building 100,000 groups sets off the collector's full collections over and over (most of a minute): off
    # while the containers are built, on again after, whatever happens.
    collecting = gc.isenabled()
    gc.disable()
    try:
        data = yaml.load(text, Loader=_FastLoader)  # libyaml's parser, PyYAML's safe constructor
    except (yaml.YAMLError, _DuplicateKey, RecursionError, ValueError, LookupError, AttributeError, OverflowError):
        return None
    finally:
        if collecting:
            gc.enable()
    return YamlDocument(str(path), data, {})
