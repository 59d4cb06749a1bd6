"""A lean HTTP/1.1 client for one URL over one kept-alive connection (TCP, TLS or a unix socket).

Used for the requests a sidecar repeats all day against one fixed URL: the metrics-proxy's
scrapes (GET) and the log-shipper's pushes to Loki or an HTTP receiver (POST). Why not
aiohttp's client: its per-request machinery (sessions, cookie jars, tracing, redirects) cost
more CPU than everything else in a scrape together (bench/metrics_proxy), and importing it
costs a process about 11 MB and 0.1 s at start (bench/log_shipper), which the log-shipper need
not pay unless it serves /metrics. This speaks just what those requests need: Content-Length,
chunked or close-delimited response bodies, interim 1xx answers, keep-alive, and a cap on the
body kept. No redirects, proxies or cookies: a fixed endpoint has no use for them. Response
parsing is pure (``ResponseParser``) and tested on its own.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


class ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.1 response."""


class TooLarge(Exception):
    """The body exceeds the cap."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes = b""
    keep_alive: bool = True


_MAX_HEAD = 64 * 1024


@dataclass
class ResponseParser:
    """Feed bytes in; ``done`` once a whole response has been read.

    A body over ``max_body`` raises TooLarge, or with ``truncate`` is cut to its first
    ``max_body`` bytes (the rest is read and dropped: an answer whose body only matters as an
    error detail)."""

    max_body: int
    truncate: bool = False
    response: Response | None = None
    done: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _body: bytearray = field(default_factory=bytearray)
    _received: int = 0  # body bytes read, kept or not
    _length: int | None = None  # Content-Length, when given
    _chunked: bool = False
    _until_close: bool = False
    _chunk_left: int | None = None  # bytes left in the current chunk (None: read a size line)
    _trailers: bool = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self.response is None:
            self._parse_head()
            if self.response is None:
                return
        self._parse_body()

    def eof(self) -> None:
        """The peer closed the connection: complete for a close-delimited body, else cut off."""
        if self.done:
            return
        if self.response is not None and self._until_close:
            self._take(bytes(self._buffer))
            self._buffer.clear()
            self._finish()
            return
        if self.response is None:
            raise ProtocolError("connection closed before a complete response head")
        raise EOFError("connection closed in the middle of the body")

    def _parse_head(self) -> None:
        prefix = bytes(self._buffer[:5])
        if not b"HTTP/".startswith(prefix):
            raise ProtocolError("not an HTTP response")
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ProtocolError("response head larger than 64 KiB")
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"bad header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if 100 <= status < 200:
            # An interim response (e.g. 103 Early Hints): the real one follows.
            return self._parse_head()
        connection = headers.get("connection", "").lower()
        keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
        self.response = Response(status, headers, keep_alive=keep_alive)
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
            self._chunked = True
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit():
                raise ProtocolError(f"bad Content-Length {raw[:40]!r}")
            self._length = int(raw)
            if self._length > self.max_body and not self.truncate:
                raise TooLarge(f"Content-Length {self._length}")
        elif status in (204, 304):
            self._length = 0
        else:
            self._until_close = True
            self.response.keep_alive = False
        coding = headers.get("content-encoding", "identity").lower()
        if coding != "identity":
            raise ProtocolError(f"unrequested Content-Encoding {coding!r}")

    def _take(self, data: bytes | bytearray) -> None:
        self._received += len(data)
        if self._received > self.max_body:
            if not self.truncate:
                raise TooLarge(f"more than {self._received} bytes")
            data = data[: max(0, self.max_body - len(self._body))]
        self._body += data

    def _finish(self) -> None:
        assert self.response is not None
        self.response.body = bytes(self._body)
        if self._buffer:
            # Bytes past the end of the response: the connection is out of step.
            self.response.keep_alive = False
        self.done = True

    def _parse_body(self) -> None:
        if self._length is not None:
            need = self._length - self._received
            self._take(self._buffer[:need])
            del self._buffer[:need]
            if self._received == self._length:
                self._finish()
        elif self._chunked:
            self._parse_chunks()
        else:
            self._take(self._buffer)
            self._buffer.clear()

    def _parse_chunks(self) -> None:
        while not self.done:
            if self._trailers:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                line = self._buffer[:end]
                del self._buffer[: end + 2]
                if not line:
                    self._finish()
                continue
            if self._chunk_left is None:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return
                size_text = bytes(self._buffer[:end]).split(b";")[0].strip()
                del self._buffer[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    self._trailers = True
                    continue
                if self._received + size > self.max_body and not self.truncate:
                    raise TooLarge(f"more than {self._received + size} bytes")
                self._chunk_left = size
            if self._chunk_left > 0:
                if not self._buffer:
                    return  # the rest of the chunk has not arrived yet
                piece = self._buffer[: self._chunk_left]
                self._take(piece)
                del self._buffer[: len(piece)]
                self._chunk_left -= len(piece)
            if self._chunk_left == 0:
                if len(self._buffer) < 2:
                    return
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del self._buffer[:2]
                self._chunk_left = None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.parser is None or self.waiter is None or self.waiter.done():
            # Bytes nobody asked for: the connection is out of step, drop it.
            self.close()
            return
        try:
            self.parser.feed(data)
        except Exception as exc:  # the parser's errors go to the waiting request
            self.waiter.set_exception(exc)
            self.close()
            return
        if self.parser.done:
            assert self.parser.response is not None
            self.waiter.set_result(self.parser.response)

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def _ended(self, exc: Exception | None = None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done() or self.parser is None:
            return
        try:
            self.parser.eof()
        except Exception as error:
            self.waiter.set_exception(error)
            return
        if self.parser.done and self.parser.response is not None:
            self.waiter.set_result(self.parser.response)
        elif exc is not None:
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Requests to one URL over a kept-alive connection; one request at a time."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        path: str,
        host_header: str,
        socket: str | None = None,
        tls: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.host, self.port, self.socket, self.tls = host, port, socket, tls
        self.path = path
        lines = [f"Host: {host_header}", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._fixed = "".join(f"{line}\r\n" for line in lines)
        self._get = f"GET {path} HTTP/1.1\r\n{self._fixed}\r\n".encode("latin-1")
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        socket: str | None = None,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
    ) -> Client:
        """A client for an ``http://`` or ``https://`` URL (a password in it becomes basic
        auth; https verifies against ``ca_file``, or the system CAs). With ``socket``, the
        connection goes to that unix socket and the URL only names the request."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        https = parts.scheme == "https"
        host = parts.hostname
        port = parts.port or (443 if https else 80)
        shown_host = f"[{host}]" if ":" in host else host
        all_headers = dict(headers or {})
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            all_headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        return cls(
            host=host,
            port=port,
            path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            host_header=shown_host if parts.port is None else f"{shown_host}:{port}",
            socket=socket,
            tls=ssl.create_default_context(cafile=ca_file) if https else None,
            headers=all_headers,
        )

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection
        if self.socket is not None:
            _, conn = await loop.create_unix_connection(_Connection, self.socket)
        else:
            _, conn = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.host if self.tls else None,
            )
        return conn

    async def get(self, max_body: int) -> Response:
        """Raises OSError (connect), ssl.SSLError, ProtocolError, TooLarge or EOFError
        (cut off); the caller bounds the time with a timeout, which closes the connection."""
        return await self._request((self._get,), max_body, truncate=False)

    async def post(
        self, body: bytes, headers: dict[str, str], *, max_body: int, truncate: bool = True
    ) -> Response:
        """POST ``body``; the answer's body is cut to ``max_body`` bytes unless ``truncate`` is
        False (then TooLarge). Errors as for ``get``. A request that meets a kept-alive
        connection the server had closed is sent once more on a fresh one, so the caller's
        endpoint must tolerate a repeat (the log-shipper's sinks are idempotent)."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {self.path} HTTP/1.1\r\n{self._fixed}{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        return await self._request((head, body), max_body, truncate=truncate)

    async def _request(
        self, request: tuple[bytes, ...], max_body: int, *, truncate: bool
    ) -> Response:
        async with self._lock:
            try:
                return await self._send(request, max_body, truncate)
            except BaseException:
                self.close()
                raise

    async def _send(self, request: tuple[bytes, ...], max_body: int, truncate: bool) -> Response:
        reused = self._conn is not None and not self._conn.closed
        if not reused:
            self._conn = await self._connect()
        try:
            response = await self._exchange(self._conn, request, max_body, truncate)  # type: ignore[arg-type]
        except ProtocolError as exc:
            # A kept-alive connection the server closed while idle fails before any byte of
            # a response arrives: that is no answer at all, try once on a fresh connection.
            if not (reused and str(exc).startswith("connection closed before")):
                raise
            self._conn = await self._connect()
            response = await self._exchange(self._conn, request, max_body, truncate)
        if not response.keep_alive:
            self.close()
        return response

    async def _exchange(
        self, conn: _Connection, request: tuple[bytes, ...], max_body: int, truncate: bool
    ) -> Response:
        if conn.closed or conn.transport is None:
            raise ProtocolError("connection closed before a complete response head")
        conn.parser = ResponseParser(max_body, truncate)
        conn.waiter = asyncio.get_running_loop().create_future()
        for part in request:  # one write each: a large body is not copied to join it
            conn.transport.write(part)
        try:
            return await conn.waiter
        finally:
            conn.parser = None
            conn.waiter = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
