"""The project's few exceptions, with stable messages that name what went wrong."""

import traceback
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration file, located by file, key path and (when known) line."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class ProbeError(Exception):
    """A probe step failed; ``reason`` is the short label used in metrics."""

    reason = "error"


class ConnectFailed(ProbeError):
    """No connection to the target's server could be made."""

    reason = "connect"


class QueryFailed(ProbeError):
    """The server rejected or aborted a query."""

    reason = "query"


class QueryTimedOut(QueryFailed):
    """A query ran past its own timeout (the metric's ``timeout:``), and was stopped."""

    reason = "query_timeout"


class DeadlineExceeded(ProbeError):
    """The probe's deadline passed before this step finished."""

    reason = "timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"deadline of {seconds:.3g}s exceeded")


class ColumnMissing(ProbeError):
    """A metric names a result column that the query did not return."""

    reason = "missing_column"

    def __init__(self, role: str, column: str, available: tuple[str, ...]) -> None:
        super().__init__(f"{role} column {column!r} is not in the result (columns: {', '.join(available) or 'none'})")


class ColumnAmbiguous(ProbeError):
    """A metric names a column that two result columns answer to, their names differing only in case."""

    reason = "ambiguous_column"

    def __init__(self, role: str, column: str, first: str, second: str) -> None:
        super().__init__(
            f"{role} column {column!r} matches both {first!r} and {second!r} in the result "
            "(column names are compared ignoring case): rename one in the SQL"
        )


def where_it_failed(error: BaseException) -> str:
    """An unexpected exception's type and the line that raised it, for the log.

    Only those: an exception's text is not known to be free of secrets (a driver may quote its DSN).
    """
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{place}"
