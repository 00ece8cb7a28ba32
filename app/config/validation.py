"""A pydantic model validated from a YAML document, its errors told in the words of the file with their lines."""

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from app.config.yamlfile import KeyPath, YamlDocument
from app.errors import ConfigProblem

_Model = TypeVar("_Model", bound=BaseModel)


def validate(
    model: type[_Model],
    doc: YamlDocument,
    locate: Callable[[KeyPath], KeyPath],
    problems: list[ConfigProblem],
    data: object = None,
) -> _Model | None:
    """Validate ``data`` (the document's data by default); ``locate`` maps a key path in it to one in the file."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except ValidationError as error:
        for detail in error.errors():
            location = locate(tuple(part for part in detail["loc"] if part != "[key]"))
            problems.append(doc.problem(location, _explain(detail)))
        return None


def at_root(path: KeyPath) -> KeyPath:
    """Key paths of a model validated from the document's root are already the file's."""
    return path


def _explain(detail: ErrorDetails) -> str:
    """A sentence for one pydantic error, in the words of the config file rather than of Python."""
    kind, given = detail["type"], detail.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        return f"invalid name {given!r}: must match {detail.get('ctx', {}).get('pattern')}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"expected a mapping (key: value), got {_yaml_type(given)}"
    if kind in {"tuple_type", "list_type"}:
        return f"expected a list, got {_yaml_type(given)}"
    return detail["msg"].removeprefix("Value error, ")


def _yaml_type(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")
