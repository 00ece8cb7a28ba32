"""What a statement of queries.yml is, read from its text: how many statements it holds, and whether it only reads.

Config validation and the drivers both use it: at load on the text as written, and before sending on the text as
the server gets it (MySQL binds values into the text on the client).
"""

import codecs
import re
from functools import lru_cache

from app.config.sql_lexer import OTHER, READINGS, Syntax, Token, invisible, tokens


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
# Statements a statement may stand in (WITH, EXPLAIN, SET STATEMENT … FOR, parentheses) before it is not read.
_MAX_LEVELS = 16
# SQLite's pragma functions that act on the database file when selected from.
_SQLITE_PRAGMAS_WITH_EFFECTS = frozenset(
    {"PRAGMA_OPTIMIZE", "PRAGMA_WAL_CHECKPOINT", "PRAGMA_INCREMENTAL_VACUUM", "PRAGMA_SHRINK_MEMORY"}
)
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
    if (character := invisible(sql)) is not None:
        return (
            f"it holds the character {character} (a control character, or a space beyond ASCII), which servers read"
            " differently from each other: write plain spaces, or the character as an escape in a string"
        )
    unfinished: str | None = None
    finished = False
    for escapes in READINGS[syntax]:
        read = list(tokens(sql, syntax, escapes))
        if isinstance(read[-1], str):
            # A string or comment that never ends in this reading: a server reading it so refuses the text whole.
            unfinished = unfinished or read[-1]
            continue
        finished = True
        refusal = _refusal(_Words(read), syntax, 0)  # type: ignore[arg-type]
        if refusal is not None:
            return refusal
    return None if finished else unfinished


# Python's codecs of MySQL charsets that send a character other than the backslash as a backslash's byte (the yen
# sign in sjis and ujis), or have characters whose second byte is one: the server then reads a string's end where
# the text had none, unless the text is read as the server decodes it.
_BACKSLASH_CODECS = frozenset({"shift_jis", "cp932", "euc_jp", "big5", "gbk", "gb18030"})


@lru_cache(maxsize=64)
def backslash_codec(charset: str) -> str | None:
    """The Python codec of ``charset`` (MySQL's name, as a DSN gives it, or Python's) if it is one of those."""
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return None
    return name if name in _BACKSLASH_CODECS else None


def as_the_server_reads(text: str, codec: str) -> str:
    """``text`` as a server that gets it in ``codec`` reads it (in shift_jis, the yen sign comes back a backslash)."""
    return text.encode(codec, errors="replace").decode(codec, errors="replace")


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


class _Words:
    """Tokens read one after the other."""

    def __init__(self, tokens: list[Token], start: int = 0, stop: int | None = None) -> None:
        self.tokens = tokens
        self.start = start
        self.stop = len(tokens) - 1 if stop is None else stop  # the end token is not part of it

    def at(self, index: int) -> str:
        return self.tokens[index].text if index < self.stop else ""

    def rest(self, start: int) -> "_Words":
        return _Words(self.tokens, start, self.stop)


def _refusal(words: _Words, syntax: Syntax, level: int) -> str | None:
    """Why the statement in ``words`` does not only read, or None; ``level``: statements it stands in."""
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
    refusal = _lead_refusal(words, start, lead, syntax, level)
    if refusal is not None:
        return refusal
    return _nested_refusal(words, syntax, level)


def _lead_refusal(words: _Words, start: int, lead: str, syntax: Syntax, level: int) -> str | None:
    if level > _MAX_LEVELS:
        return f"it nests statements deeper than {_MAX_LEVELS} (WITH, EXPLAIN, SET STATEMENT … FOR)"
    base = words.tokens[start].depth
    if syntax == "mysql" and lead == "SET" and words.at(start + 1) == "STATEMENT":
        return _set_statement_refusal(words, start, base, syntax, level)
    if lead == "ANALYZE" and syntax == "mysql" and words.at(start + 1) in {"TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"}:
        return "ANALYZE TABLE writes the table's statistics"
    if lead in {"EXPLAIN", "DESCRIBE", "DESC"} or (lead == "ANALYZE" and syntax == "mysql"):
        explained = _first_at(words, start + 1, base, _EXPLAINED)
        if explained is None:
            # DESCRIBE a table, EXPLAIN FOR CONNECTION.
            return None if lead != "ANALYZE" else "ANALYZE is followed by no statement"
        inner = _refusal(words.rest(explained), syntax, level + 1)
        return None if inner is None else f"{lead} runs the statement it explains, and {inner}"
    if lead == "WITH":
        main = _first_at(words, start + 1, base, _NESTED)
        if main is None:
            return "WITH is followed by no statement"
        return _lead_refusal(words, main, words.at(main), syntax, level + 1)
    if lead in _LEADS or (syntax == "mysql" and lead in {"HELP", "CHECKSUM"}):
        return None
    if lead in {"CALL", "DO", "EXECUTE"}:
        return f"{lead} runs code that may write and commit"
    return f"{lead} is not a statement that only reads"


def _first_at(words: _Words, start: int, depth: int, keywords: frozenset[str]) -> int | None:
    """Where the first of ``keywords`` stands from ``start`` on at ``depth`` (not inside parentheses opened there)."""
    return next(
        (
            index
            for index in range(start, words.stop)
            if words.tokens[index].depth == depth and words.at(index) in keywords
        ),
        None,
    )


def _set_statement_refusal(words: _Words, start: int, base: int, syntax: Syntax, level: int) -> str | None:
    """MariaDB's SET STATEMENT var = value [, …] FOR statement: the statement must read, and lift nothing."""
    for index in range(start + 2, words.stop):
        if words.tokens[index].depth != base:
            continue
        word = words.at(index)
        if word.lstrip(OTHER) in _LIFTS_READ_ONLY:
            return f"SET STATEMENT {word.lstrip(OTHER).lower()} = … would lift read-only for the statement"
        if word == "FOR":
            inner = _refusal(words.rest(index + 1), syntax, level + 1)
            return None if inner is None else f"SET STATEMENT … FOR runs the statement after FOR, and {inner}"
    return "SET STATEMENT has no FOR"


def _nested_refusal(words: _Words, syntax: Syntax, level: int) -> str | None:
    """Why something inside the statement would write: SELECT … INTO, a keyword of a statement that writes where
    a name could not stand, or a subquery or common table expression that does not only read (PostgreSQL's
    WITH d AS (DELETE … RETURNING …) SELECT …)."""
    for index in range(words.start, words.stop):
        word = words.at(index)
        if word == "INTO":
            return "SELECT … INTO writes (a table on PostgreSQL, a file or variables on MySQL) and returns no rows"
        if _writes(words, index, word):
            return f"{word} stands in it, a keyword of a statement that writes"
        if syntax == "standard" and word in _SQLITE_PRAGMAS_WITH_EFFECTS:
            return f"{word.lower()} acts on the database file (SQLite's pragma functions)"
        if index > words.start and words.at(index - 1) == "(" and word in _NESTED:
            if word in {"INSERT", "REPLACE"} and words.at(index + 1) == "(":
                continue  # MySQL's INSERT(str, pos, len, new) and REPLACE(str, from, to): functions
            close = next(
                (after for after in range(index, words.stop) if words.tokens[after].depth < words.tokens[index].depth),
                words.stop,
            )
            inner = _lead_refusal(_Words(words.tokens, index, close), index, word, syntax, level + 1)
            if inner is not None:
                return f"a statement in parentheses does not only read: {inner}"
    return None


def _writes(words: _Words, index: int, word: str) -> bool:
    """Whether ``word`` is the keyword of a statement that writes: reserved words, which no name may be written as
    unquoted, but MySQL's INSERT() and REPLACE() functions and the locking reads' FOR [NO KEY] UPDATE."""
    if word in {"DELETE", "MERGE", "TRUNCATE"}:
        return True
    if word in {"INSERT", "REPLACE"}:
        return words.at(index + 1) != "("
    return word == "UPDATE" and words.at(index - 1) not in {"FOR", "KEY"}
