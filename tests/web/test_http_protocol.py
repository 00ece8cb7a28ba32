"""The HTTP protocol sends what uvicorn writes in one event-loop turn as one write, in order, before closing."""

import asyncio

from app.web.http_protocol import _JoinedWrites


class _Recorded(asyncio.Transport):
    """A transport that records what reaches it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def _turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _answer_in_one_turn() -> list[tuple[str, bytes]]:
    recorded = _Recorded()
    joined = _JoinedWrites(recorded, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    joined.write(bytearray(b"body"))
    assert joined.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody")
    await _turn()
    joined.write(b"next")
    await _turn()
    return recorded.calls


def test_the_writes_of_one_turn_reach_the_socket_as_one_in_order() -> None:
    calls = asyncio.run(_answer_in_one_turn())
    assert calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"), ("write", b"next")]


async def _write_then(end: str) -> list[tuple[str, bytes]]:
    recorded = _Recorded()
    joined = _JoinedWrites(recorded, asyncio.get_running_loop())
    joined.write(b"last words")
    getattr(joined, end)()
    await _turn()
    return recorded.calls


def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    assert asyncio.run(_write_then("close")) == [("write", b"last words"), ("close", b"")]
    assert asyncio.run(_write_then("abort")) == [("abort", b"")]
