"""A TCP proxy written for the tests: connections spread over backends in turn, and cut at will."""

import contextlib
import socket
import threading
import time
from collections.abc import Sequence


class Relay:
    """Listens on a loopback port; its n-th connection goes to ``backends[n % len(backends)]`` (all on loopback).

    A backend that refuses makes the relay close that client's connection, as a proxy with a backend down does.
    Connections accepted while ``delay`` is set reach their backend that many seconds late (a slow network);
    while ``latency`` is set, every byte of the connections accepted then arrives that many seconds late, each way.
    """

    def __init__(self, backends: Sequence[int]) -> None:
        self._backends = backends
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._accepted = 0
        self.delay = 0.0
        self.latency = 0.0

    def __enter__(self) -> "Relay":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        self.cut()

    def cut(self) -> None:
        """Close every relayed connection, on both sides."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                backend = self._backends[self._accepted % len(self._backends)]
                self._accepted += 1
                time.sleep(self.delay)
                try:
                    upstream = socket.create_connection(("127.0.0.1", backend))
                except OSError:
                    client.close()
                    continue
                self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(source, sink, self.latency), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket, latency: float) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if latency:  # in turn: the protocols relayed here wait for each answer before the next question
                time.sleep(latency)
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
