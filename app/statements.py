"""What a statement of queries.yml is, read from its text: how many statements it holds, and whether it only reads.

Config validation and the drivers both use it: at load on the text as written, and before sending on the text as
the server gets it (MySQL binds values into the text on the client).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

# How a server reads a text: which comments and quotes it knows ("standard": the SQL standard's, SQLite's).
Syntax = Literal["mysql", "postgresql", "standard"]


def syntax_of(backend: str) -> Syntax:
    """How a server of SQLAlchemy's ``backend`` ("mysql", "postgresql", "sqlite", …) reads a text."""
    if backend in {"mysql", "mariadb"}:
        return "mysql"
    return "postgresql" if backend == "postgresql" else "standard"


def without_trailing_semicolons(sql: str) -> str:
    """``sql`` without the ';' (and blanks) it may end with."""
    statement = sql.rstrip()
    while statement.endswith(";"):
        statement = statement[:-1].rstrip()
    return statement


def several_statements(sql: str) -> bool:
    """True if a ';' stands in ``sql`` anywhere but at its end.

    A ';' is the only thing that separates statements in a text, so a text without one is one statement, whatever
    its quotes and comments say: a ';' in a string or a comment counts too (CHAR(59) writes one).
    """
    return ";" in without_trailing_semicolons(sql)


SEVERAL_STATEMENTS = (
    "sqlprobe runs one statement per query: a ';' may end it, but not separate statements, nor stand in a string or"
    " comment (CHAR(59) writes one)"
)


class WriteRefused(Exception):
    """A statement that may change data or the session was about to run through a read-only target."""


# The statements that only read, by their first keyword (EXPLAIN and WITH: what they explain or end with, too).
READS = ("SELECT", "WITH … SELECT", "SHOW", "DESCRIBE", "EXPLAIN", "VALUES", "TABLE")
_LEADS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE"})
# First keywords of a statement that may stand inside parentheses (a subquery, a common table expression's body).
_NESTED = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})
# First keywords that EXPLAIN (and MariaDB's ANALYZE) may be followed by: the statement they explain, which
# EXPLAIN ANALYZE runs.
_EXPLAINED = _NESTED | frozenset({"CREATE", "EXECUTE", "DECLARE", "CALL", "DO", "LOAD", "COPY", "REFRESH"})
# Variables whose SET STATEMENT … FOR would lift read-only for the statement.
_LIFTS_READ_ONLY = frozenset({"TX_READ_ONLY", "TRANSACTION_READ_ONLY", "READ_ONLY"})
# MySQL/MariaDB run the text of /*! … */ and /*M! … */ (with an optional version) as SQL.
EXECUTABLE_COMMENT = re.compile(r"/\*M?!", re.IGNORECASE)


@lru_cache(maxsize=4096)
def refusal_to_read_only(sql: str, syntax: Syntax) -> str | None:
    """Why ``sql`` may not run through a read-only target (None: it only reads).

    Decided by the statement's kind, its first keyword after comments, as the server decides it; what it nests
    (a subquery, a common table expression, an explained or SET STATEMENT's statement) must only read too. Where
    the server's sql_mode decides how a backslash in a string reads, the text must read either way.
    """
    if syntax == "mysql" and EXECUTABLE_COMMENT.search(sql):
        return (
            "it holds an executable comment (/*! … */ or /*M! … */), whose text the server runs as SQL and which could"
            " hide any statement: write its content as plain SQL"
        )
    for escapes in _READINGS[syntax]:
        tokens = list(_tokens(sql, syntax, escapes))
        if isinstance(tokens[-1], str):  # an unterminated string or comment: the server's reading is not known
            return tokens[-1]
        refusal = _refusal(_Words(tokens), syntax)  # type: ignore[arg-type]
        if refusal is not None:
            return refusal
    return None


# Which quotes take backslash escapes, by the server's settings: MySQL's NO_BACKSLASH_ESCAPES and ANSI_QUOTES (a
# double-quoted name takes none), PostgreSQL's standard_conforming_strings (off: every string takes them), none in
# SQLite. A text is checked in each reading, and refused if any reading finds it writes.
_READINGS: dict[Syntax, tuple[frozenset[str], ...]] = {
    "mysql": (frozenset(), frozenset("'\""), frozenset("'")),
    "postgresql": (frozenset(), frozenset("'")),
    "standard": (frozenset(),),
}


def read_only_problem(sql: str, syntax: Syntax) -> str | None:
    """The sentence a user reads when ``sql`` is refused on a read-only target, or None."""
    refusal = refusal_to_read_only(sql, syntax)
    if refusal is None:
        return None
    return (
        f"refused on a read-only target: {refusal}. Only statements that read run there ({', '.join(READS)});"
        " to run it, set read_only: false on the target (and give its user no more grants than the statement needs)"
    )


def refuse_unless_read(sql: str, syntax: Syntax) -> None:
    """WriteRefused unless ``sql`` only reads (the second check, on the text as it is sent)."""
    problem = read_only_problem(sql, syntax)
    if problem is not None:
        raise WriteRefused(f"sqlprobe did not send the statement: {problem}")


@dataclass(frozen=True, slots=True)
class _Token:
    """A keyword or name (upper-cased), or one character of punctuation; strings, numbers and comments are left out,
    but a quoted name or a string counts as an ``other`` token, so that what follows it is known not to lead."""

    text: str
    depth: int  # parentheses open around it


_OTHER = "\0"  # a string, quoted name or number: a token no keyword equals


def _tokens(sql: str, syntax: Syntax, escapes: frozenset[str]) -> Iterator["_Token | str"]:
    """The text's tokens; a problem (a string) as the last item if the text ends inside a string or comment."""
    depth, at, end = 0, 0, len(sql)
    while at < end:
        char = sql[at]
        if char.isspace():
            at += 1
        elif _line_comment(sql, at, syntax):
            newline = sql.find("\n", at)
            at = end if newline < 0 else newline + 1
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
            yield _Token(_OTHER + name, depth)
        elif char == "$" and syntax == "postgresql" and (dollar := _DOLLAR_TAG.match(sql, at)):
            close = sql.find(dollar.group(), dollar.end())
            if close < 0:
                yield "a dollar-quoted string is never closed"
                return
            at = close + len(dollar.group())
            yield _Token(_OTHER, depth)
        elif word := _WORD.match(sql, at):
            at = word.end()
            yield _Token(word.group().upper(), depth)
        else:
            if char == ")":
                depth = max(depth - 1, 0)
            yield _Token(char, depth)
            if char == "(":
                depth += 1
            at += 1
    yield _Token("", 0)  # the end


_WORD = re.compile(r"[\w$]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][\w]*)?\$")


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
    """PostgreSQL: E'…' takes backslash escapes whatever standard_conforming_strings says."""
    return sql[at] == "'" and at > 0 and sql[at - 1] in "eE" and (at < 2 or not (sql[at - 2].isalnum()))


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


class _Words:
    """Tokens read one after the other."""

    def __init__(self, tokens: list[_Token], start: int = 0, stop: int | None = None) -> None:
        self.tokens = tokens
        self.start = start
        self.stop = len(tokens) - 1 if stop is None else stop  # the end token is not part of it

    def at(self, index: int) -> str:
        return self.tokens[index].text if index < self.stop else ""

    def rest(self, start: int) -> "_Words":
        return _Words(self.tokens, start, self.stop)


def _refusal(words: _Words, syntax: Syntax) -> str | None:
    """Why the statement in ``words`` does not only read, or None."""
    start = words.start
    lead = words.at(start)
    while lead == "(":  # (SELECT …) UNION (SELECT …): what opens it decides
        start += 1
        lead = words.at(start)
    if lead == "":
        return "it holds no statement"
    separator = next((index for index in range(start, words.stop) if words.at(index) == ";"), None)
    if separator is not None and any(words.at(index) != ";" for index in range(separator, words.stop)):
        return "a ';' stands before another statement: one statement per query"
    refusal = _lead_refusal(words, start, lead, syntax)
    if refusal is not None:
        return refusal
    return _nested_refusal(words, syntax)


def _lead_refusal(words: _Words, start: int, lead: str, syntax: Syntax) -> str | None:
    base = words.tokens[start].depth
    if syntax == "mysql" and lead == "SET" and words.at(start + 1) == "STATEMENT":
        return _set_statement_refusal(words, start, base, syntax)
    if lead == "ANALYZE" and syntax == "mysql" and words.at(start + 1) in {"TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"}:
        return "ANALYZE TABLE writes the table's statistics"
    if lead in {"EXPLAIN", "DESCRIBE", "DESC"} or (lead == "ANALYZE" and syntax == "mysql"):
        explained = next(
            (
                index
                for index in range(start + 1, words.stop)
                if words.tokens[index].depth == base and words.at(index) in _EXPLAINED
            ),
            None,
        )
        if explained is None:
            # DESCRIBE a table, EXPLAIN FOR CONNECTION.
            return None if lead != "ANALYZE" else "ANALYZE is followed by no statement"
        inner = _refusal(words.rest(explained), syntax)
        return None if inner is None else f"{lead} runs the statement it explains, and {inner}"
    if lead == "WITH":
        main = next(
            (
                index
                for index in range(start + 1, words.stop)
                if words.tokens[index].depth == base and words.at(index) in _NESTED
            ),
            None,
        )
        if main is None:
            return "WITH is followed by no statement"
        return _lead_refusal(words, main, words.at(main), syntax)
    if lead in _LEADS:
        return None
    if lead in {"CALL", "DO", "EXECUTE"}:
        return f"{lead} runs code that may write and commit"
    return f"{lead} is not a statement that only reads"


def _set_statement_refusal(words: _Words, start: int, base: int, syntax: Syntax) -> str | None:
    """MariaDB's SET STATEMENT var = value [, …] FOR statement: the statement must read, and lift nothing."""
    for index in range(start + 2, words.stop):
        if words.tokens[index].depth != base:
            continue
        word = words.at(index)
        if word.lstrip(_OTHER) in _LIFTS_READ_ONLY:
            return f"SET STATEMENT {word.lstrip(_OTHER).lower()} = … would lift read-only for the statement"
        if word == "FOR":
            inner = _refusal(words.rest(index + 1), syntax)
            return None if inner is None else f"SET STATEMENT … FOR runs the statement after FOR, and {inner}"
    return "SET STATEMENT has no FOR"


def _nested_refusal(words: _Words, syntax: Syntax) -> str | None:
    """Why something inside the statement would write: SELECT … INTO, or a subquery or common table expression
    that does not only read (PostgreSQL's WITH d AS (DELETE … RETURNING …) SELECT …)."""
    for index in range(words.start, words.stop):
        word = words.at(index)
        if word == "INTO":
            return "SELECT … INTO writes (a table on PostgreSQL, a file or variables on MySQL) and returns no rows"
        if index > words.start and words.at(index - 1) == "(" and word in _NESTED:
            if word in {"INSERT", "REPLACE"} and words.at(index + 1) == "(":
                continue  # MySQL's INSERT(str, pos, len, new) and REPLACE(str, from, to): functions
            close = next(
                (after for after in range(index, words.stop) if words.tokens[after].depth < words.tokens[index].depth),
                words.stop,
            )
            inner = _lead_refusal(_Words(words.tokens, index, close), index, word, syntax)
            if inner is not None:
                return f"a statement in parentheses does not only read: {inner}"
    return None
