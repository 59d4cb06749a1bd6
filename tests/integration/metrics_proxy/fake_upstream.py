"""A misbehaving HTTP server on a free port, for what a real nginx never does: garbage, bodies
cut off or far too large, answers slower than any timeout. Runs in a thread of the test process
and counts the requests it got."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable

Behaviour = Callable[[socket.socket, "FakeUpstream"], None]

STUB_STATUS = (
    b"Active connections: 1 \nserver accepts handled requests\n 7 7 9 \n"
    b"Reading: 0 Writing: 1 Waiting: 0 \n"
)


def _read_request(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


def answer(body: bytes, content_type: str = "text/plain", status: str = "200 OK") -> Behaviour:
    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)

    return behave


def raw(data: bytes) -> Behaviour:
    """Bytes that are not HTTP at all, then close."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        sock.sendall(data)

    return behave


def truncated(body: bytes, declared: int) -> Behaviour:
    """Declares ``declared`` bytes, sends ``body`` (fewer), closes."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {declared}\r\n\r\n"
        sock.sendall(head.encode() + body)

    return behave


def huge(total: int) -> Behaviour:
    """A chunked body of ``total`` bytes, streamed until the client stops reading."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"# " + b"x" * 65533 + b"\n"
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the client gave up reading: expected

    return behave


def slow(body: bytes, stop: threading.Event) -> Behaviour:
    """Headers at once, then the body a byte at a time, every 0.2 s, until ``stop``."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        for byte in body:
            if stop.wait(0.2):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    return behave


def delayed(body: bytes, release: threading.Event) -> Behaviour:
    """A correct stub_status answer, held back until ``release`` is set."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        release.wait(30)
        answer(body)(sock, _)

    return behave


class FakeUpstream:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.last_request = b""
        self._lock = threading.Lock()
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                # One request per connection: the proxy must cope with servers that close.
                request = _read_request(sock)
                if request is None:
                    return
                with fake._lock:
                    fake.requests += 1
                    fake.last_request = request
                fake.behaviour(sock, fake)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
