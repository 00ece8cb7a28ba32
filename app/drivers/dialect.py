"""What sqlprobe needs of each kind of server it probes on the event loop: one function or statement per concern."""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.config import Target
from app.drivers.kills import Identity

# Seconds a KILL QUERY or cancel request may take before we give up on stopping the query server-side.
CANCEL_TIMEOUT = 5.0
# Seconds a statement may outlast the probe's deadline on the server: sqlprobe's own stop (KILL QUERY, cancel)
# comes first, and the server's own timeouts (PostgreSQL's statement_timeout, MariaDB's idle read-only transaction
# timeout) end what a lost stop left running.
DEADLINE_GRACE = 1.0

# A statement's column names and rows; None if it has no result set.
Fetched = tuple[tuple[str, ...], Sequence[Sequence[Any]]] | None
Arguments = Sequence[Any] | Mapping[str, Any]


class Pipe(Protocol):
    """The answers to one write of several statements (app/drivers/mysql_pipeline.py), read in order."""

    ended: bool  # no answer left to read: the last was read, or the server stopped at a failed statement
    failed: bool  # ended before sqlprobe's end of the transaction was read (a statement failed, the connection closed)
    overflowed: bool  # the last result read was cut at its bound and ran on past what is read cheaply to its end
    reset_refused: bool  # the server refused the session's reset sent with the write, and ran the statements

    async def next(self) -> Fetched:
        """The next statement's columns and rows (None without a result set); its error if it failed."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """One kind of server, as its asyncio driver is used through its public API."""

    driver: str  # SQLAlchemy's name of the asyncio driver ("aiomysql": mysql+aiomysql://)
    connect_args: Callable[[Target], dict[str, Any]]  # the driver's engine-wide connect() arguments
    # Runs a statement of queries.yml on a driver connection: its columns and at most the rows given (when it read
    # that many, the rest may be unread and the connection closed or out of step: the caller discards it). With
    # arguments, the SQL is in the driver's parameter style and the driver binds them. The last argument is one of
    # sqlprobe's own statements to run after it in the same text ("" for none; only where ``chain`` says so). With the
    # last, True, a statement that does not only read is refused before it is sent (WriteRefused), as the server
    # would get its text (app/config/statements.py). The last, seconds the statement may run (the metric's timeout),
    # enforced by the server where it can; None for no limit of its own.
    fetch: Callable[[Any, str, int, Arguments | None, str, bool, float | None], Awaitable[Fetched]]
    command: Callable[[Any, str], Awaitable[None]]  # runs sqlprobe's own statements (no result set)
    ping: Callable[[Any], Awaitable[None]]  # the cheapest round trip
    close: Callable[[Any], None]  # closes a driver connection at once, its socket with it, without a round trip
    # The read-only transaction around a probe's statements: begun before the first, begun again after a failed one
    # (PostgreSQL aborts a transaction on error), ended after the last or before the connection goes back to the
    # pool. With ``chain``, each statement's text carries the begin of the next statement's own transaction, or the
    # last one's end (MySQL: a statement may commit implicitly; one write per statement all the same).
    begin: str
    restart: str
    end: str
    # Stops the statement running on a connection, from outside it (a KILL QUERY over a connection made with the
    # connect() arguments given, for the identity noted at set-up; a cancel request): may raise KillSkipped.
    stop: Callable[[Any, Mapping[str, Any], Identity | None], Awaitable[None]]
    chain: bool = False
    # Opens a driver connection with the URL's and connect_args' arguments, if not the driver's own connect() way.
    connect: Callable[..., Awaitable[Any]] | None = None
    # Sets up a new connection; the server it reached and its id there, if the dialect can stop a statement by id.
    set_up: Callable[[Any, Target], Awaitable[Identity | None]] | None = None
    # sqlprobe's settings of a target's sessions (SET statements), as made at connect.
    settings: Callable[[Target], str] | None = None
    # Gives a reused connection back its state as new (nothing a probe before left), then runs the text given (the
    # settings, and the begin for a read-only target) in the same round trip; closes the connection if it fails.
    reset: Callable[[Any, str], Awaitable[None]] | None = None
    # The end for a connection's server, if it differs from ``end`` by the server's version.
    end_for: Callable[[Any], str] | None = None
    # A probe's statements in one write (app/drivers/mysql_pipeline.py), where the dialect can: ``prepare`` turns a
    # statement of queries.yml into the text the server gets (arguments bound, checked, time-limited: as fetch
    # does), ``pipe`` sends the texts with sqlprobe's own statements around them and returns their answers' reader.
    prepare: Callable[[Any, str, Arguments | None, bool, float | None], str] | None = None
    pipe: Callable[[Any, bool, str, Sequence[str], Sequence[int], str, str], Awaitable[Pipe]] | None = None
