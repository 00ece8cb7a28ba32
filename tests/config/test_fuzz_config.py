"""Fuzzing the config loader: any text, any values, and the answer is a Config or a ConfigError that names the place."""

import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import BaseModel

from app.config import load_config, schema
from app.errors import ConfigError
from tests.fuzzing import fuzz_settings
from tests.paths import ROOT_DIR, TESTS_DIR

ROOT = ROOT_DIR
CONFIGS = TESTS_DIR / "configs"
# (targets.yml, queries.yml) pairs that load; the fuzzers start from these.
VALID_PAIRS = [
    (CONFIGS / "targets.yml", CONFIGS / "queries.yml"),
    (CONFIGS / "basic_targets.yml", CONFIGS / "queries.yml"),
    (ROOT / "targets.yml", ROOT / "queries.yml"),
]
ENVIRON_NAMES = ("TEST_PASSWORD", "MYSQL_EXPORTER_PASSWORD")

FUZZ = fuzz_settings(250, HealthCheck.data_too_large)
# Stops a hang, which hypothesis's deadline cannot (it is checked after the example returns); far above any noise.
HANG_SECONDS = 10

# Problems that rightly have no line: the file is not text at all, or holds no YAML node to point at.
LINELESS = ("cannot read file: ", "expected a mapping (key: value), got nothing")


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError(f"load_config did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _write_pair(directory: Path, targets: bytes, queries: bytes) -> tuple[Path, Path]:
    targets_path, queries_path = directory / "targets.yml", directory / "queries.yml"
    targets_path.write_bytes(targets)
    queries_path.write_bytes(queries)
    return targets_path, queries_path


def assert_loads_or_explains(targets: bytes, queries: bytes, environ: dict[str, str]) -> None:
    """Load the two files: a Config, or a ConfigError whose every problem names file, line and reason."""
    # Not pytest's tmp_path: hypothesis runs many examples in one call of the test function.
    with tempfile.TemporaryDirectory() as directory:
        targets_path, queries_path = _write_pair(Path(directory), targets, queries)
        try:
            with _time_limit(HANG_SECONDS):
                load_config(targets_path, queries_path, environ)
        except ConfigError as error:
            problems = error.problems
        else:
            return
    assert problems
    for problem in problems:
        assert problem.file in {str(targets_path), str(queries_path)}, problem
        assert problem.message.strip(), problem
        assert problem.line is not None or problem.message.startswith(LINELESS), problem
        assert problem.line is None or problem.line >= 1, problem


# -- (a) mangled text -------------------------------------------------------------------------------------------

# What a hand, a bad merge or a bad editor puts into YAML.
YAML_DEBRIS = [
    "&a ",
    "*a",
    "*nowhere",
    "<<: *a",
    "&a [*a]",
    "!!python/object:os.system ",
    "!!python/name:os.system",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!str ",
    "!!map ",
    "!!seq ",
    "!!omap ",
    "!custom ",
    "\t",
    ": :",
    ":",
    "- ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    "'",
    '"',
    '"\\0"',
    '"\\x00\\ud800"',
    "|",
    ">-",
    "#",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "---\n",
    "...\n",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "190:20:30",
    ".nan",
    "-.inf",
    "1.0e+400",
    "1" + "0" * 400,
    "9" * 5000,
    "2024-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "\x00",
    "\ufeff",
    "\x85",
    "\u2028",
    "\r",
    "\x1b[0m",
    "é",
    "\U0001f600",
    "Ω≈ç√",
    "\ud800",
    "${TEST_PASSWORD}",
    "${UNSET_IN_FUZZ}",
    "${",
    "mysql+pymysql://u:p@[::1/",
    "nosuch+driver://",
]

Lines = list[str]
Mutation = Callable[[st.DataObject, Lines], Lines]


def _index(data: st.DataObject, lines: Lines) -> int:
    return data.draw(st.integers(0, max(len(lines) - 1, 0)))


def _delete(data: st.DataObject, lines: Lines) -> Lines:
    index = _index(data, lines)
    return lines[:index] + lines[index + 1 :]


def _duplicate(data: st.DataObject, lines: Lines) -> Lines:
    index = _index(data, lines)
    return lines[: index + 1] + lines[index:]


def _swap(data: st.DataObject, lines: Lines) -> Lines:
    first, second = _index(data, lines), _index(data, lines)
    swapped = list(lines)
    if swapped:
        swapped[first], swapped[second] = swapped[second], swapped[first]
    return swapped


def _edit_line(data: st.DataObject, lines: Lines, insert: str, replace: bool) -> Lines:
    if not lines:
        return [insert]
    index = _index(data, lines)
    line = lines[index]
    at = data.draw(st.integers(0, len(line)))
    return [*lines[:index], line[:at] + insert + line[at + replace :], *lines[index + 1 :]]


def _flip(data: st.DataObject, lines: Lines) -> Lines:
    return _edit_line(data, lines, data.draw(st.characters()), replace=True)


def _insert(data: st.DataObject, lines: Lines) -> Lines:
    debris = data.draw(st.sampled_from(YAML_DEBRIS) | st.text(max_size=4))
    return _edit_line(data, lines, debris, replace=data.draw(st.booleans()))


def _reindent(data: st.DataObject, lines: Lines) -> Lines:
    return _edit_line(data, lines, data.draw(st.sampled_from([" ", "  ", "\t", "    "])), replace=False)


def _truncate(data: st.DataObject, lines: Lines) -> Lines:
    text = "".join(lines)
    return [text[: data.draw(st.integers(0, len(text)))]]


def _nest(data: st.DataObject, lines: Lines) -> Lines:
    depth = data.draw(st.sampled_from([10, 100, 700]))
    return _edit_line(data, lines, data.draw(st.sampled_from(["[", "{a: ", "- "])) * depth, replace=False)


MUTATIONS: list[Mutation] = [_delete, _duplicate, _swap, _flip, _insert, _reindent, _truncate, _nest]


def _encode(data: st.DataObject, text: str) -> bytes:
    """The text as a file: usually UTF-8 (lone surrogates make it invalid), sometimes with a BOM or as UTF-16."""
    encoding = data.draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    return text.encode(encoding, "surrogatepass")


def _mangle(data: st.DataObject, text: str) -> bytes:
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        lines = data.draw(st.sampled_from(MUTATIONS))(data, lines)
    return _encode(data, "".join(lines))


environs = st.fixed_dictionaries({}, optional={name: st.text(max_size=12) for name in ENVIRON_NAMES})


@FUZZ
@given(data=st.data(), pair=st.sampled_from(VALID_PAIRS), mangled=st.sampled_from(["targets", "queries", "both"]))
def test_mangled_yaml_loads_or_is_a_config_error_that_names_file_and_line(
    data: st.DataObject, pair: tuple[Path, Path], mangled: str
) -> None:
    targets, queries = (path.read_text(encoding="utf-8") for path in pair)
    environ = data.draw(environs)
    assert_loads_or_explains(
        _mangle(data, targets) if mangled != "queries" else targets.encode(),
        _mangle(data, queries) if mangled != "targets" else queries.encode(),
        environ,
    )


# -- (b) well-formed YAML, wrong values -------------------------------------------------------------------------

# Every key the schema knows, so that edits hit real fields as well as unknown ones.
SCHEMA_KEYS = sorted(
    {
        name
        for model in vars(schema).values()
        if isinstance(model, type) and issubclass(model, BaseModel)
        for name in model.model_fields
    }
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, 10**20, 10**400, -(10**400)]),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", " ", "0", "-1s", "500ms", "1e9h", "10 seconds", "sqlite://", "gauge", "counter"]),
    st.sampled_from(["__name__", "job", "instance", "1bad", "probe_success", "query_exporter_up", "a-b"]),
    st.from_regex(r"\A(mysql\+pymysql|sqlite|postgresql|nosuch|mysql\+mysqldb)://[^\s]{0,12}\Z"),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=6),
)
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8), st.integers(), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=6,
)

KeyPath = tuple[Any, ...]


def _paths(node: object, path: KeyPath = ()) -> Iterator[KeyPath]:
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*path, index))


def _edit(data: st.DataObject, document: object) -> object:
    """Replace, drop or add one value somewhere in the document."""
    path = data.draw(st.sampled_from(list(_paths(document))))
    if not path:
        return data.draw(values)
    parent: Any = document
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(keys)] = data.draw(values)
    else:
        parent.append(data.draw(values))
    return document


def _wrong_values(data: st.DataObject, path: Path) -> bytes:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(1, 3))):
        document = _edit(data, document)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=data.draw(st.booleans())).encode()


@FUZZ
@given(data=st.data(), pair=st.sampled_from(VALID_PAIRS), edited=st.sampled_from(["targets", "queries", "both"]))
def test_wrong_values_at_any_key_path_load_or_are_a_config_error_that_names_file_and_line(
    data: st.DataObject, pair: tuple[Path, Path], edited: str
) -> None:
    targets_path, queries_path = pair
    environ = data.draw(environs)
    assert_loads_or_explains(
        _wrong_values(data, targets_path) if edited != "queries" else targets_path.read_bytes(),
        _wrong_values(data, queries_path) if edited != "targets" else queries_path.read_bytes(),
        environ,
    )


# -- what the fuzzers found ---------------------------------------------------------------------------------------

VALID_TARGETS = (CONFIGS / "targets.yml").read_text()
VALID_QUERIES = (CONFIGS / "queries.yml").read_text()
ENV = {"TEST_PASSWORD": "s3cret"}
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    + "targets: *i\n"
)

# Each case: (targets.yml, queries.yml, the line of the problem, text the problem must contain).
FOUND = {
    # PyYAML checks the whole text when the loader is built, which was outside the error handling.
    "nul_byte": (VALID_TARGETS.replace("one:", "o\x00ne:"), VALID_QUERIES, 4, "unacceptable character #x0000"),
    # PyYAML's constructors raise plain ValueError for these.
    "impossible_date": (
        VALID_TARGETS.replace("2500ms", "2024-13-45"),
        VALID_QUERIES,
        10,
        "'2024-13-45' is not a valid !!timestamp",
    ),
    "impossible_date_key": (
        VALID_TARGETS.replace("one:", "2024-13-45:"),
        VALID_QUERIES,
        4,
        "'2024-13-45' is not a valid !!timestamp",
    ),
    "integer_past_python_limit": (
        VALID_TARGETS.replace("2500ms", "9" * 5000),
        VALID_QUERIES,
        10,
        "is not a valid !!int",
    ),
    # An explicit tag on a scalar it does not fit: AttributeError and KeyError from PyYAML's constructors.
    "timestamp_tag_on_a_word": (VALID_TARGETS.replace("2500ms", "!!timestamp soon"), VALID_QUERIES, 10, "!!timestamp"),
    "bool_tag_on_a_word": (VALID_TARGETS.replace("2500ms", "!!bool maybe"), VALID_QUERIES, 10, "!!bool"),
    # RecursionError from PyYAML's composer.
    "deep_nesting": ("targets: " + "[" * 1000 + "\n", VALID_QUERIES, 1, "invalid YAML: nested too deeply"),
    # A "billion laughs": 9**9 values from ten lines took exponential time and memory.
    "alias_bomb": (ALIAS_BOMB, VALID_QUERIES, 1, "more than 100000 values once aliases are expanded"),
    # float(10**400) raised OverflowError in schema._parse_duration, which pydantic lets through.
    "integer_timeout_too_large_for_a_float": (
        VALID_TARGETS.replace("2500ms", "1" + "0" * 400),
        VALID_QUERIES,
        10,
        "targets.two.timeout",
    ),
    # schema._reject_reserved_label called str methods on whatever the label list held.
    "label_that_is_not_a_string": (
        VALID_TARGETS,
        VALID_QUERIES.replace("      value: up\n", "      labels: [~]\n      value: up\n", 1),
        8,
        "query_sets.basic.up.labels[0]",
    ),
}


@pytest.mark.parametrize(("targets", "queries", "line", "expected"), FOUND.values(), ids=list(FOUND))
def test_input_the_fuzzers_found_is_a_config_error_at_its_line(
    tmp_path: Path, targets: str, queries: str, line: int, expected: str
) -> None:
    paths = _write_pair(tmp_path, targets.encode(), queries.encode())
    with pytest.raises(ConfigError) as raised:
        load_config(*paths, ENV)
    [problem] = [problem for problem in raised.value.problems if expected in str(problem)]
    assert problem.line == line
    assert problem.file == str(paths[0] if targets != VALID_TARGETS else paths[1])
