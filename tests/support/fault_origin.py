"""A real HTTP/1.1 server on 127.0.0.1 whose answers are scripted per path, for the faults a
well-behaved origin (nginx) never produces on demand: a 500 then a 200, a body that stalls, a
Content-Length that lies, redirect loops. Runs its own event loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None  # send this Content-Length instead of the real one
    chunked: bool = False  # no Content-Length at all (chunked transfer)
    stall_after: int | None = None  # send this many body bytes, then hang until closed


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FaultOrigin:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with ``replies`` in order; the last one repeats."""
        with self._lock:
            self.scripts[path] = list(replies)

    def _next(self, path: str) -> Reply:
        with self._lock:
            replies = self.scripts.get(path)
            if not replies:
                return Reply(404, b"not scripted\n")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            with self._lock:
                self.requests.append((path, headers))
            reply = self._next(path)
            out = [
                f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'X')}",
                "Connection: close",
            ]
            out += [f"{k}: {v}" for k, v in reply.headers.items()]
            body = reply.body
            if reply.chunked:
                out.append("Transfer-Encoding: chunked")
            else:
                length = reply.declared_length if reply.declared_length is not None else len(body)
                out.append(f"Content-Length: {length}")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            if reply.chunked:
                for i in range(0, len(body), 8192):
                    part = body[i : i + 8192]
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            elif reply.stall_after is not None:
                writer.write(body[: reply.stall_after])
                await writer.drain()
                await asyncio.Event().wait()  # hang until the server closes us
            else:
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def start(self) -> FaultOrigin:
        self._thread.start()

        async def serve() -> None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", 0, ssl=self.ssl_context
            )
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def fault_origin(ssl_context: ssl.SSLContext | None = None) -> Iterator[FaultOrigin]:
    origin = FaultOrigin(ssl_context).start()
    try:
        yield origin
    finally:
        origin.stop()
