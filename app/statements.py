"""One statement per query on MySQL and MariaDB, where a session runs several statements in one text."""


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
