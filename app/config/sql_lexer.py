"""The tokens of an SQL text as a server reads it: keywords and names, punctuation and parentheses; strings,
numbers and comments told apart by each server's rules, so that app/config/statements.py can read a statement's kind."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

# How a server reads a text: which comments and quotes it knows ("standard": the SQL standard's, SQLite's).
Syntax = Literal["mysql", "postgresql", "standard"]


# Which quotes take backslash escapes, by the server's settings: MySQL's NO_BACKSLASH_ESCAPES and ANSI_QUOTES (a
# double-quoted name takes none), PostgreSQL's standard_conforming_strings (off: every string takes them), none in
# SQLite. A text is checked in each reading, and refused if any reading finds it writes.
READINGS: dict[Syntax, tuple[frozenset[str], ...]] = {
    "mysql": (frozenset(), frozenset("'\""), frozenset("'")),
    "postgresql": (frozenset(), frozenset("'")),
    "standard": (frozenset(),),
}


@dataclass(frozen=True, slots=True)
class Token:
    """A keyword or name (upper-cased), or one character of punctuation; strings, numbers and comments are left out,
    but a quoted name or a string counts as an ``other`` token, so that what follows it is known not to lead."""

    text: str
    depth: int  # parentheses open around it


OTHER = "\0"  # a string, quoted name or number: a token no keyword equals
# Deeper than this, a text is not read (and so refused): a bound on the time and stack its reading takes.
MAX_DEPTH = 64
_BLANKS = " \t\n"


def tokens(sql: str, syntax: Syntax, escapes: frozenset[str]) -> Iterator["Token | str"]:
    """The text's tokens; a problem (a string) as the last item if the text ends inside a string or comment."""
    depth, at, end = 0, 0, len(sql)
    while at < end:
        char = sql[at]
        if char in _BLANKS or sql.startswith("\r\n", at):
            at += 1
        elif _line_comment(sql, at, syntax):
            # PostgreSQL ends a comment at a carriage return too; a lone one is refused (see invisible()).
            ends = [index for index in (sql.find("\n", at), sql.find("\r", at)) if index >= 0]
            at = min(ends) + 1 if ends else end
        elif sql.startswith("/*", at):
            at = _block_comment_end(sql, at, nested=syntax == "postgresql")
            if at < 0:
                yield "a comment is never closed (/* without */)"
                return
        elif char in "'\"`" or (char == "[" and syntax == "standard"):
            escaped = char in escapes or (syntax == "postgresql" and _escape_string(sql, at))
            opened, at = at, _quoted_end(sql, at, "]" if char == "[" else char, escaped)
            if at < 0:
                yield f"a quoted string or name ({char}) is never closed"
                return
            # A quoted name keeps its name (SET STATEMENT `tx_read_only` = 0), behind a mark no keyword has.
            name = sql[opened + 1 : at - 1].upper() if char != "'" else ""
            yield Token(OTHER + name, depth)
        elif char == "$" and syntax == "postgresql" and (dollar := _DOLLAR_TAG.match(sql, at)):
            close = sql.find(dollar.group(), dollar.end())
            if close < 0:
                yield "a dollar-quoted string is never closed"
                return
            at = close + len(dollar.group())
            yield Token(OTHER, depth)
        elif word := _WORD.match(sql, at):
            at = word.end()
            # Keywords are ASCII: a name with other letters keeps them as they are ("\u017felect" is no SELECT).
            text = word.group()
            yield Token(text.upper() if text.isascii() else OTHER + text, depth)
        else:
            if char == ")":
                depth = max(depth - 1, 0)
            yield Token(char, depth)
            if char == "(":
                depth += 1
                if depth > MAX_DEPTH:
                    yield f"it nests parentheses deeper than {MAX_DEPTH}"
                    return
            at += 1
    yield Token("", 0)  # the end


# A name or keyword: servers take every character beyond ASCII as a letter of a name.
_WORD = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
# Characters servers read differently from each other and from this reading: controls (but tab and line ends),
# DEL, and spaces or format characters beyond ASCII (MariaDB ends "--" before a control and reads U+00A0 as a
# letter; Python calls U+00A0 a space). A lone carriage return ends a PostgreSQL comment but not a MySQL one.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00a0\u1680\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff]|\r(?!\n)"
)


def invisible(sql: str) -> str | None:
    """A character of ``sql`` that servers read differently from each other (as U+XXXX), or None."""
    found = _INVISIBLE.search(sql)
    return None if found is None else f"U+{ord(found.group()[0]):04X}"


def _line_comment(sql: str, at: int, syntax: Syntax) -> bool:
    if syntax == "mysql" and sql[at] == "#":
        return True
    if not sql.startswith("--", at):
        return False
    # MySQL and MariaDB read "--" as a comment only before a blank or a control character ("1--1" is 1 - -1).
    return syntax != "mysql" or at + 2 >= len(sql) or sql[at + 2].isspace() or ord(sql[at + 2]) < 32


def _block_comment_end(sql: str, at: int, nested: bool) -> int:
    """Where the comment that opens at ``at`` ends (after its */), or -1 if it never does."""
    level, at = 0, at
    while at < len(sql):
        if sql.startswith("/*", at) and (nested or level == 0):
            level, at = level + 1, at + 2
        elif sql.startswith("*/", at):
            level, at = level - 1, at + 2
            if level == 0:
                return at
        else:
            at += 1
    return -1


def _escape_string(sql: str, at: int) -> bool:
    """PostgreSQL: E'…' takes backslash escapes whatever standard_conforming_strings says (an E that ends a longer
    name is that name's)."""
    return sql[at] == "'" and at > 0 and sql[at - 1] in "eE" and (at < 2 or not _WORD.match(sql[at - 2]))


def _quoted_end(sql: str, at: int, close: str, backslash_escapes: bool) -> int:
    """Where the string or quoted name that opens at ``at`` ends (after its closing quote), or -1."""
    at += 1
    while at < len(sql):
        char = sql[at]
        if backslash_escapes and char == "\\":
            at += 2
        elif char == close:
            if sql.startswith(close * 2, at) and close != "]":
                at += 2  # a doubled quote stands for itself
            else:
                return at + 1
        else:
            at += 1
    return -1
