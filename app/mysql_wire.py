"""A statement on a PyMySQL connection without PyMySQL's cursor, result and packet objects: the probes' hot path.

For the small result sets that probes read, PyMySQL's objects and buffered reads cost about a third of a query's
CPU (bare loops paced like the bench, 200 targets every 5 s: 144-157 µs per query with a cursor, 101-103 µs
with this module). It speaks the same text protocol on the same socket, converts values with the connection's
own decoders in the same way, applies the same read and write timeouts, and fails with the same exceptions, so
the pool, SQLAlchemy's disconnect detection and KILL QUERY see no difference. Anything it does not expect ends
the connection, as PyMySQL does.
"""

import struct
import sys
import time
from typing import Any

from pymysql import connections, converters, err
from pymysql.connections import Connection
from pymysql.constants import CR, FIELD_TYPE, SERVER_STATUS

Columns = tuple[str, ...]
Row = tuple[Any, ...]

_COM_QUERY = b"\x03"
_MAX_PACKET = 0xFFFFFF  # a payload this long continues in the next packet
_BINARY = 63  # the charset number of binary strings: they stay bytes
_RECEIVE = 65536
_LARGEST_RECEIVE = 2**20
_MORE_RESULTS = SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS
_STATUS = struct.Struct("<H")
_UNKNOWN = object()  # the socket's timeout, before PyMySQL 1.2 kept track of it
_SIZES = {252: 2, 253: 3, 254: 8}  # bytes of a length-encoded integer after its first byte
# What a column definition holds after its six names: the charset, length and type (and flags, scale).
_COLUMN = struct.Struct("<xHIB")
# Column types PyMySQL decodes as text. Private: app/internals.py checks it is there, and without it this module
# is not used (and importing it must not fail).
_TEXT_TYPES: frozenset[int] | set[int] = getattr(connections, "TEXT_TYPES", frozenset())


def fits(sql: str) -> bool:
    """True if ``sql`` goes in one packet; longer statements (16 MiB) are left to PyMySQL."""
    return len(sql) < _MAX_PACKET // 4  # at most 4 bytes per character, whatever the encoding


def fetch(
    connection: Connection, sql: str, before: str = "", after: str = "", max_rows: int = sys.maxsize
) -> tuple[Columns, list[Row]] | None:
    """Run ``sql`` and read its first result: column names and rows, or None if it has no result set.

    At most ``max_rows`` rows of it are read: a result that has more is cut there and the connection closed, so that
    the server stops sending the rest (its next write fails) instead of sqlprobe reading it; ``after`` is then lost
    with the connection, which the caller discards.

    Later results (a stored procedure's) are read and dropped, as closing PyMySQL's cursor does. ``before`` and
    ``after`` (statements without a result set, sqlprobe's own) go in the same write as ``sql``, each a command of
    its own, and their answers are read in turn: one round trip for all. The first error the server answers with
    is raised once every answer was read.
    """
    if connection._sock is None:
        raise err.InterfaceError(0, "")  # what PyMySQL raises on a closed connection
    commands = [command for command in (before, sql, after) if command]
    main = 1 if before else 0  # where sql is in commands
    _send(connection, b"".join(_command(connection, command) for command in commands))
    reader = _Reader(connection)
    fetched = None
    refused: err.MySQLError | None = None
    try:
        for index in range(len(commands)):
            reader.next_answer()
            try:
                result, more = _result(reader, reader.packet(), max_rows if index == main else None)
            except err.MySQLError as error:
                if connection._sock is None:
                    raise  # the connection was lost (and closed)
                refused = refused or error  # the server's error: the connection is in step, the next answer follows
                continue
            if index == main:
                fetched = result
                if connection._sock is None:
                    break  # cut at max_rows: the connection is closed, the rest never read
            while more:
                try:
                    _, more = _result(reader, reader.packet(), None)
                except err.MySQLError:
                    if connection._sock is None and index < len(commands) - 1:
                        raise  # the answers still to come are lost with the connection
                    break  # the server ends the response with its error, or the connection is closed already
    except err.MySQLError:
        raise  # a lost connection (closed already)
    except Exception as error:  # noqa: BLE001 - translated here, into an error the prober handles
        # A cell that cannot be decoded, a malformed packet: the rest of the response is still on the socket,
        # so the connection is closed, and the error is one that SQLAlchemy takes for a disconnect. Its type
        # only: the message of a conversion error may quote the cell.
        connection._force_close()
        reason = f"could not read the result ({type(error).__name__}), connection closed"
        raise err.OperationalError(CR.CR_COMMANDS_OUT_OF_SYNC, reason) from None
    except BaseException:
        connection._force_close()  # KeyboardInterrupt, MemoryError: as they are, on a connection never used again
        raise
    if refused is not None:
        raise refused
    return fetched


def _command(connection: Connection, sql: str) -> bytes:
    """The packet of a COM_QUERY (each command starts its own sequence at 0)."""
    payload = _COM_QUERY + sql.encode(connection.encoding)
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def _send(connection: Connection, data: bytes) -> None:
    _timeout(connection, connection._write_timeout)
    try:
        connection._sock.sendall(data)
    except OSError as error:
        connection._force_close()
        raise err.OperationalError(CR.CR_SERVER_GONE_ERROR, f"MySQL server has gone away ({error!r})") from None


def _timeout(connection: Connection, seconds: float | None) -> None:
    # settimeout releases the GIL: PyMySQL calls it only when the timeout changes, and so does this.
    if getattr(connection, "_current_timeout", _UNKNOWN) != seconds:
        connection._sock.settimeout(seconds)
        connection._current_timeout = seconds


def _result(reader: "_Reader", first: bytes, max_rows: int | None) -> tuple[tuple[Columns, list[Row]] | None, int]:
    """One result of the response (at most ``max_rows`` of its rows; None: read all, keep none), and whether more."""
    if first[0] == 0x00 and len(first) >= 7:  # OK: a statement without a result set
        status = _STATUS.unpack_from(first, _skip_length(first, _skip_length(first, 1)))[0]
        reader.connection.server_status = status  # as PyMySQL keeps it from OK packets (autocommit, in transaction)
        return None, status & _MORE_RESULTS
    if first[0] == 0xFB:  # LOAD DATA LOCAL: PyMySQL refuses it unless asked for, and we never ask
        reader.connection._force_close()
        raise err.OperationalError(CR.CR_COMMANDS_OUT_OF_SYNC, "the server asked for a local file")
    count, _ = _length(first, 0)
    names = []
    decoders = []
    for _ in range(count or 0):
        name, decode = _column(reader.connection, reader.packet())
        names.append(name)
        decoders.append(decode)
    if not _is_eof(reader.packet()):  # the EOF after the column definitions
        raise ValueError("no EOF after the column definitions")
    rows: list[Row] = []
    while max_rows is None or len(rows) < max_rows:
        packet = reader.packet()
        if _is_eof(packet):  # the last row was read
            status = _STATUS.unpack_from(packet, 3)[0]
            reader.connection.server_status = status  # as for OK packets: whether a transaction is still open
            return (tuple(names), rows), status & _MORE_RESULTS
        if max_rows is not None:
            rows.append(_row(packet, decoders))
    # The rest is not read: closing the socket makes the server's next write fail, which ends the statement.
    reader.connection._force_close()
    return (tuple(names), rows), 0


def _is_eof(packet: bytes) -> bool:
    # 0xFE also starts a row whose first cell is 2^24 bytes or longer: such a packet is longer than this.
    return packet[0] == 0xFE and len(packet) < 9


Decoder = tuple[str | None, Any]  # the encoding to decode with (None: keep bytes), and the converter after it


def _column(connection: Connection, packet: bytes) -> tuple[str, Decoder]:
    position = 0
    for _ in range(4):  # catalog, schema, table, original table
        position = _skip_string(packet, position)
    length, position = _length(packet, position)
    name = packet[position : position + (length or 0)].decode(connection.encoding)
    position = _skip_string(packet, position + (length or 0))  # original name
    charset, _, field_type = _COLUMN.unpack_from(packet, position)
    # As PyMySQL's MySQLResult._get_descriptions chooses them.
    encoding: str | None
    if not connection.use_unicode:
        encoding = None
    elif field_type == FIELD_TYPE.JSON:
        encoding = connection.encoding
    elif field_type in _TEXT_TYPES:
        encoding = None if charset == _BINARY else connection.encoding
    else:
        encoding = "ascii"
    converter = connection.decoders.get(field_type)
    return name, (encoding, None if converter is converters.through else converter)


def _row(packet: bytes, decoders: list[Decoder]) -> Row:
    row: list[Any] = []
    position = 0
    end = len(packet)
    for encoding, converter in decoders:
        if position >= end:
            break  # as PyMySQL: a row with fewer columns than described ends there
        first = packet[position]
        if first < 251:
            position += 1
            data: Any = packet[position : position + first]
            position += first
        elif first == 251:  # NULL
            row.append(None)
            position += 1
            continue
        else:
            length, position = _length(packet, position)
            data = packet[position : position + (length or 0)]
            position += length or 0
        if encoding is not None:
            data = data.decode(encoding)
        if converter is not None:
            data = converter(data)
        row.append(data)
    return tuple(row)


def _length(packet: bytes, position: int) -> tuple[int | None, int]:
    """A length-encoded integer at ``position`` (None: NULL), and the position after it."""
    first = packet[position]
    if first < 251:
        return first, position + 1
    if first == 251:
        return None, position + 1
    size = _SIZES.get(first)
    if size is None:
        raise ValueError(f"{first:#x} is not a length")
    return int.from_bytes(packet[position + 1 : position + 1 + size], "little"), position + 1 + size


def _skip_length(packet: bytes, position: int) -> int:
    return _length(packet, position)[1]


def _skip_string(packet: bytes, position: int) -> int:
    length, position = _length(packet, position)
    return position + (length or 0)


class _Reader:
    """The packets of one response, read from the socket in large chunks."""

    __slots__ = ("_buffer", "_position", "_sequence", "connection")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._buffer = b""
        self._position = 0
        self._sequence = 1
        _timeout(connection, connection._read_timeout)

    def next_answer(self) -> None:
        """The next packets answer the next command (which was its packet 0)."""
        self._sequence = 1

    def packet(self) -> bytes:
        """The next packet's payload; raises the server's error if it is an error packet."""
        payload = self._packet()
        if len(payload) == _MAX_PACKET:
            parts = [payload]
            while len(parts[-1]) == _MAX_PACKET:
                parts.append(self._packet())
            payload = b"".join(parts)
        if payload and payload[0] == 0xFF:
            err.raise_mysql_exception(payload)
        return payload

    def _packet(self) -> bytes:
        self._need(4)
        header = self._buffer[self._position : self._position + 4]
        length = header[0] | header[1] << 8 | header[2] << 16
        sequence = header[3]
        if sequence != self._sequence:
            self.connection._force_close()
            if sequence == 0:  # MariaDB's error packet when it shuts down
                raise err.OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query")
            raise err.InternalError(f"Packet sequence number wrong - got {sequence} expected {self._sequence}")
        self._sequence = (sequence + 1) & 0xFF
        self._need(4 + length)
        start = self._position + 4
        self._position = start + length
        return self._buffer[start : self._position]

    def _need(self, count: int) -> None:
        """Make the buffer hold ``count`` bytes from the position on (the bytes before it are dropped)."""
        have = len(self._buffer) - self._position
        if have >= count:
            return
        chunks = [self._buffer[self._position :]]
        while have < count:
            # The rest of a long packet (a large cell) in pieces of up to 1 MiB, joined once: no copy per chunk.
            chunks.append(self._receive(min(max(count - have, _RECEIVE), _LARGEST_RECEIVE)))
            have += len(chunks[-1])
        self._buffer = b"".join(chunks)
        self._position = 0

    def _receive(self, size: int) -> bytes:
        while True:
            try:
                chunk: bytes = self.connection._sock.recv(size)
                break
            except TimeoutError as error:
                # A probe that joined the run may have moved its deadline while this statement ran: wait on till then.
                left = getattr(self.connection, "read_until", 0.0) - time.monotonic()
                if left <= 0:
                    raise self._lost(error) from None
                _timeout(self.connection, left)
            except BaseException as error:  # noqa: BLE001 - whatever it is, the connection is out of step now
                raise self._lost(error) from None
        if not chunk:
            raise self._lost(None)
        return chunk

    def _lost(self, error: BaseException | None) -> BaseException:
        """Close the connection (the server may still answer on it, out of step); return what to raise."""
        self.connection._force_close()
        if error is not None and not isinstance(error, OSError):  # a timeout is an OSError
            return error  # not a network error (KeyboardInterrupt...): as it is, as PyMySQL lets it through
        detail = "" if error is None else f" ({error})"  # None: the server closed the connection
        lost: BaseException = err.OperationalError(
            CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query{detail}"
        )
        return lost
