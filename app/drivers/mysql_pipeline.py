"""A probe's statements sent to MySQL/MariaDB in one write, their results read as they come (#28).

The text holds sqlprobe's own statements around the probe's: the session's settings and the first read-only
transaction's begin (after a reset), each statement followed by the next one's begin, and the last by the end:

    [COM_RESET_CONNECTION] COM_QUERY "SET …;START TRANSACTION READ ONLY;q1;START TRANSACTION READ ONLY;q2;COMMIT…"

The server runs them in order and stops at the first that fails: nothing after it ran, so the caller sends what is
left again (app/probe/pipelined.py). Each statement still runs in a read-only transaction of its own, with its own
time limit (app/drivers/mysql.py: time_limited).

Neither aiomysql 0.3 nor PyMySQL can write two commands, or read several result sets row by row, through a public
call (aiomysql's unbuffered cursor reads a text's later result sets whole: its nextset() reads buffered). So this
module uses the protocol steps aiomysql's own query() and next_result() are made of, the ones reset_and_begin
uses already: aiomysql is pinned below 0.4 in pyproject.toml, the steps are checked at import (PIPELINE_AVAILABLE),
and without them sqlprobe sends one statement per write as before (app/drivers/mysql.py: fetch).
"""

import struct
from collections.abc import Sequence
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import COMMAND

from app.drivers.dialect import Fetched

# The command's number in the protocol (PyMySQL's constants stop at COM_BINLOG_DUMP_GTID).
COM_RESET_CONNECTION = 0x1F
# One protocol packet carries at most 2**24 - 2 bytes of a command's text (PyMySQL's MAX_PACKET_LEN, less the
# command's byte): a longer text is sent as aiomysql's own query() sends it, in several packets.
_MAX_PAYLOAD = 2**24 - 2
_CONNECTION_STEPS = ("_write_bytes", "_read_ok_packet", "_read_query_result", "_execute_command", "_read_packet")
_RESULT_STEPS = ("_read_rowdata_packet_unbuffered", "_check_packet_is_eof")
# Bytes of a result cut at its rows' bound that are read (and dropped) to keep the connection in step; past them,
# the connection is closed if nothing of the probe's follows in the write (Pipe._drained).
DRAIN_BYTES = 256 * 1024
PIPELINE_AVAILABLE = all(callable(getattr(aiomysql.Connection, step, None)) for step in _CONNECTION_STEPS) and all(
    callable(getattr(getattr(aiomysql.connection, "MySQLResult", None), step, None)) for step in _RESULT_STEPS
)


def joined(parts: Sequence[str]) -> str:
    """Statements as one text. After a comment that may run to the end of its line (#, -- ), the ';' goes on a line
    of its own, so the comment cannot swallow the next statement (only then: a session's statement, as SHOW
    PROCESSLIST tells it, is the query as written)."""
    text = ""
    for number, part in enumerate(parts):
        if number:
            text += "\n;" if "#" in parts[number - 1] or "--" in parts[number - 1] else ";"
        text += part
    return text


def statement_count(own: str) -> int:
    """How many statements one of sqlprobe's own texts holds (none of them has a ';' of its own)."""
    return own.count(";") + 1 if own else 0


class Pipe:
    """The answers to one write of a probe's statements, read in order with next().

    After a statement's result, the answers of sqlprobe's own statements that follow it are read too, so that the
    connection is in step when the last result was read. A statement that fails ends the pipe (the server ran
    nothing after it): next() raises the driver's error, and ``ended`` is True. So does a result cut at its
    ``max_rows`` (the connection is closed: the rest was not read).
    """

    def __init__(self, connection: Any, max_rows: Sequence[int], own_after: Sequence[int]) -> None:
        self._connection = connection
        self._max_rows = max_rows
        self._own_after = own_after
        self._next = 0
        self.ended = not max_rows
        # Ended before sqlprobe's end of the transaction was read: a statement failed, or the connection was closed.
        self.failed = False
        # The last result read was cut at its bound and ran on past DRAIN_BYTES: its query had better end its write.
        self.overflowed = False
        self.reset_refused = False  # the server refused the reset sent with the write (and ran the statements)

    async def next(self) -> Fetched:
        """The next statement's columns and rows (None without a result set); its error if it failed."""
        if self.ended:
            raise pymysql.err.InterfaceError(0, "no statement left in this write")
        number = self._next
        self._next += 1
        self.overflowed = False
        try:
            fetched = await self._result(self._max_rows[number])
            # The rest of a result cut at its bound may still hold the statement's error, or the connection's loss.
            drained = fetched is None or len(fetched[1]) < self._max_rows[number] or await self._drained()
        except BaseException:
            self.ended = self.failed = True
            raise
        if not drained:
            self.ended = self.failed = True
            self._connection.close()  # the rest unread: the connection is out of step
            return fetched
        try:
            for _ in range(self._own_after[number]):
                await self._connection.next_result()
        except pymysql.err.MySQLError:
            # sqlprobe's own begin or end failed after the statement ran: its result stands, the session does not.
            self.ended = self.failed = True
            self._connection.close()
            return fetched
        self.ended = self._next == len(self._max_rows)
        return fetched

    async def _drained(self) -> bool:
        """Read what is left of a result cut at its rows' bound, unconverted; False if it did not end within
        DRAIN_BYTES and nothing of the probe's follows it in the write (the connection may be closed unread).

        The server goes on with the text's next statement once it has written a result, and the socket buffers (a
        proxy's too) may hold megabytes of it before sqlprobe has read the first rows: closing the connection
        then would leave that statement run, and it would be sent again on a new connection. So a result with
        statements after it is read to its end (the probe's deadline bounds the wait), and ``overflowed`` says
        that its query had better end its write.
        """
        result = self._connection._result
        read = 0
        last = self._next == len(self._max_rows)
        while result is not None and result.unbuffered_active and (read < DRAIN_BYTES or not last):
            packet = await self._connection._read_packet()
            read += len(packet.get_all_data())
            if result._check_packet_is_eof(packet):
                result.unbuffered_active = False
        self.overflowed = read >= DRAIN_BYTES
        return result is None or not result.unbuffered_active

    async def _result(self, max_rows: int) -> Fetched:
        connection = self._connection
        await connection._read_query_result(unbuffered=True)
        result = connection._result
        if result is None or result.description is None:
            return None
        columns = tuple(column[0] for column in result.description)
        rows: list[tuple[Any, ...]] = []
        while len(rows) < max_rows:
            row = await result._read_rowdata_packet_unbuffered()
            if row is None:
                break
            rows.append(row)
        return columns, rows


async def send(
    connection: Any, reset: bool, prelude: str, texts: Sequence[str], max_rows: Sequence[int], between: str, end: str
) -> Pipe:
    """Write ``prelude`` (sqlprobe's own: settings, begin), then each of ``texts`` followed by ``between`` (the next
    one's begin) or, after the last, ``end``, as one query, after a COM_RESET_CONNECTION if ``reset``: one write.

    Returns once the reset and the prelude were answered (the first round trip: a reused connection found dead
    there ran nothing); closes the connection on any failure up to then, and raises.
    """
    parts = [prelude] if prelude else []
    own_after = []
    for number, text in enumerate(texts):
        own = between if number < len(texts) - 1 else end
        parts.extend((text, own) if own else (text,))
        own_after.append(statement_count(own))
    sql = joined(parts).encode(connection.encoding, "surrogateescape")
    try:
        if connection.closed:
            raise pymysql.err.InterfaceError(0, "Not connected")
        if connection._result is not None and (connection._result.unbuffered_active or connection._result.has_next):
            raise pymysql.err.InterfaceError(0, "the connection is out of step")
        if len(sql) <= _MAX_PAYLOAD:
            reset_packet = struct.pack("<iB", 1, COM_RESET_CONNECTION) if reset else b""
            connection._write_bytes(reset_packet + struct.pack("<iB", len(sql) + 1, COMMAND.COM_QUERY) + sql)
            connection._next_seq_id = 1
        else:
            if reset:
                await connection._execute_command(COM_RESET_CONNECTION, b"")
            await connection._execute_command(COMMAND.COM_QUERY, sql)
        connection._result = None
        refused = False
        if reset:
            try:
                await connection._read_ok_packet()
            except pymysql.err.MySQLError as error:
                if connection.closed or error.args[:1] == (2014,):  # lost, or an answer out of step
                    raise
                # The server (or a proxy: a failover to an older server) refused the reset and ran the text after
                # it, in the session it did not reset: its answers are read, not sent again.
                refused = True
            connection._next_seq_id = 1  # the query's answer is numbered from 1, as the reset's was (a new command)
        for _ in range(statement_count(prelude)):
            await connection.next_result()
    except BaseException:
        connection.close()
        raise
    pipe = Pipe(connection, max_rows, own_after)
    pipe.reset_refused = refused
    return pipe
