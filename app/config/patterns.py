"""The ``match`` patterns of ``families``: matched in time linear in the row name, whatever the pattern.

A row's name comes from the database, that is from whoever can name a table, a user or a variable. Python's ``re``
backtracks: ``(a+)+b`` takes 2^n steps to find that n a's and a "!" do not match (27 characters: 0.8 s per
probe, each one more doubling it, on the event loop and holding the GIL, with no timeout that could end it).
RE2 (Google's automaton matcher, PyPI ``google-re2``, manylinux wheels) runs in time linear in the text whatever
the pattern, and refuses when it compiles what it cannot run so: backreferences and lookaround. We chose it over
refusing "dangerous" patterns by their shape, which misses some (``(a|aa)+b``, ``(a|a)+b``) and refuses safe ones.
Row names are only ``[a-z0-9_]`` (app/probe/families.py), where RE2's syntax and Python's mean the same (RE2's
``\\d`` and ``\\w`` are ASCII-only, Python's Unicode). A pattern is compiled by Python's ``re`` first, for its error
messages and its refusal of a group named twice, which RE2 accepts.
"""

import re
from dataclasses import dataclass, field
from typing import Any

import re2  # google-re2: no type hints, so only used here behind a typed class

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 writes every refused pattern to stderr itself otherwise; ours say it with the line


@dataclass(frozen=True, slots=True)
class RowPattern:
    """A compiled ``match``: the whole row name matches or not, and its named groups' values if it does."""

    text: str
    group_names: tuple[str, ...]  # the named groups, in order: labels of the family
    _compiled: Any = field(compare=False, hash=False, repr=False)

    def fullmatch(self, name: str) -> tuple[str, ...] | None:
        """The named groups' values (a group that took no part: "") if the whole of ``name`` matches, else None."""
        match = self._compiled.fullmatch(name)
        if match is None:
            return None
        return tuple(match.group(group) or "" for group in self.group_names)


def compile_row_pattern(text: str) -> RowPattern:
    """``text`` compiled, or ValueError saying why it cannot be (a sentence for the config error)."""
    try:
        checked = re.compile(text)
    except re.error as error:
        raise ValueError(f"invalid regular expression {text!r}: {error}") from None
    try:
        compiled = re2.compile(text, _OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else error
        raise ValueError(
            f"regular expression {text!r} cannot be matched in linear time (RE2: {reason}):"
            " no backreferences or lookaround"
        ) from None
    return RowPattern(text, tuple(checked.groupindex), compiled)
