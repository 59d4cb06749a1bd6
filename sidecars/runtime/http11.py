"""A lean HTTP/1.1 client for one URL over one kept-alive connection (TCP, TLS or a unix socket).

Used for the requests a sidecar repeats all day against one fixed URL: the metrics-proxy's
scrapes (GET) and the log-shipper's pushes to Loki or an HTTP receiver (POST). Why not
aiohttp's client: its per-request machinery (sessions, cookie jars, tracing, redirects) cost
more CPU than everything else in a scrape together (bench/metrics_proxy), and importing it
costs a process about 11 MB and 0.1 s at start (bench/log_shipper), which the log-shipper need
not pay unless it serves /metrics. This speaks just what those requests need: Content-Length,
chunked or close-delimited response bodies, interim 1xx answers, keep-alive, and a cap on the
body kept. No redirects, proxies or cookies: a fixed endpoint has no use for them.

The bytes are parsed by httptools (llhttp, the parser of Node.js and uvicorn): status line,
header lines, Content-Length and chunk syntax, chunked decoding. ``ResponseParser`` wraps it
with this client's policy (head and body caps, how many interim answers, which codings) and
turns every refusal, the library's or its own, into ProtocolError or TooLarge, so a caller can
count any odd answer as the peer's failure. It is pure (no I/O) and tested on its own.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from urllib.parse import unquote, urlsplit

import httptools


class ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.1 response this client accepts."""


class TooLarge(Exception):
    """The body exceeds the cap."""


class Response:
    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes = b"", keep_alive: bool = True
    ) -> None:
        self.status = status
        self.headers = headers  # lower-cased names; repeated headers joined with ", "
        self.body = body
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes, keep_alive={self.keep_alive})"


MAX_HEAD = 64 * 1024  # all of a response's head bytes, interim answers included
MAX_INTERIM = 10  # 1xx answers before the real one: a peer sending them forever is refused
_PER_HEADER = 4  # ": " and CRLF, counted with each header's name and value


class _Finished(Exception):
    """Raised inside a parser callback to stop at the end of the response."""


class ResponseParser:
    """Feed bytes in; ``done`` once a whole response has been read.

    A body over ``max_body`` raises TooLarge, or with ``truncate`` is cut to its first
    ``max_body`` bytes (the rest is read and dropped: an answer whose body only matters as an
    error detail). Bytes past the end of the response mark it not to be kept alive (the
    connection is out of step) and are otherwise ignored."""

    def __init__(self, max_body: int, truncate: bool = False) -> None:
        self.max_body = max_body
        self.truncate = truncate
        self.response: Response | None = None
        self.done = False
        self._parser = httptools.HttpResponseParser(self)
        self._prefix = b""  # the first bytes, until they show an HTTP/ status line
        self._headers: dict[str, str] = {}
        self._head_bytes = 0  # head bytes seen (counted per feed while a head is open)
        self._header_bytes = 0  # the complete header lines' size (counted per callback)
        self._interim = 0
        self._body: list[bytes] = []
        self._kept = 0  # body bytes kept
        self._received = 0  # body bytes read, kept or not
        self._until_close = False

    # --- feeding -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Raises ProtocolError or TooLarge; nothing else."""
        if self.done:
            assert self.response is not None
            self.response.keep_alive = False
            return
        if len(self._prefix) < 5:
            self._prefix += data[: 5 - len(self._prefix)]
            if not b"HTTP/".startswith(self._prefix):
                raise ProtocolError(f"not an HTTP response (starts {self._prefix!r})")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            own = exc.__context__
            if isinstance(own, _Finished):
                assert self.response is not None
                self.response.keep_alive = False
                return
            if isinstance(own, ProtocolError | TooLarge):
                raise own from None
            raise ProtocolError(f"bad response: {own!r}") from None
        except httptools.HttpParserUpgrade:
            raise ProtocolError("the peer switched protocols (101 or Upgrade)") from None
        except httptools.HttpParserError as exc:
            if self.done:  # e.g. "Data after `Connection: close`": past the end, not ours
                assert self.response is not None
                self.response.keep_alive = False
                return
            raise ProtocolError(f"bad response: {exc}") from None
        if self.response is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                raise ProtocolError(f"response head larger than {MAX_HEAD // 1024} KiB")

    def eof(self) -> None:
        """The peer closed the connection: complete for a close-delimited body, else cut off
        (EOFError), or ProtocolError when not even a head arrived."""
        if self.done:
            return
        if self.response is None:
            raise ProtocolError("connection closed before a complete response head")
        if not self._until_close:
            raise EOFError("connection closed in the middle of the body")
        self._finish()

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            raise _Finished  # a second response nobody asked for: stop here

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            return  # a trailer after a chunked body: not kept
        self._count(len(name) + len(value) + _PER_HEADER)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(f"unsupported HTTP version {version!r}")
        headers, self._headers = self._headers, {}
        if status == 101:
            raise ProtocolError("the peer switched protocols (101 or Upgrade)")
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) answers")
            return
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding and encoding != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding {encoding[:40]!r}")
        coding = headers.get("content-encoding", "identity").lower()
        if coding != "identity":
            raise ProtocolError(f"unrequested Content-Encoding {coding[:40]!r}")
        if not encoding and "content-length" in headers:
            raw = headers["content-length"]
            if not (raw.isascii() and raw.isdigit()):  # llhttp checks this too; say it here
                raise ProtocolError(f"bad Content-Length {raw[:40]!r}")
            length = int(raw)
            if length > self.max_body and not self.truncate:
                raise TooLarge(f"Content-Length {length}")
        elif not encoding and status not in (204, 304):
            self._until_close = True  # the body ends when the peer closes
        keep_alive = self._parser.should_keep_alive() and not self._until_close
        self.response = Response(status, headers, keep_alive=keep_alive)

    def on_body(self, data: bytes) -> None:
        if self.response is None:
            raise ProtocolError("a body on an interim (1xx) answer")
        self._received += len(data)
        if self._received > self.max_body:
            if not self.truncate:
                raise TooLarge(f"more than {self._received} bytes")
            data = data[: self.max_body - self._kept]
        if data:
            self._body.append(data)
            self._kept += len(data)

    def on_message_complete(self) -> None:
        if self.response is not None:  # else an interim answer ended: wait for the real one
            self._finish()

    # --- policy --------------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEAD:
            raise ProtocolError(f"response head larger than {MAX_HEAD // 1024} KiB")

    def _finish(self) -> None:
        assert self.response is not None
        self.response.body = b"".join(self._body)
        self._body = []
        self.done = True


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


def _lines(headers: dict[str, str]) -> str:
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {name[:40]!r}: a line break or NUL cannot be sent")
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


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
        tls: ssl.SSLContext | None = None,
    ) -> Client:
        """A client for an ``http://`` or ``https://`` URL (a password in it becomes basic
        auth; https verifies with ``tls``, else against ``ca_file``, or the system CAs). With
        ``socket``, the connection goes to that unix socket and the URL only names the request."""
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
            tls=(tls or ssl.create_default_context(cafile=ca_file)) if https else None,
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

    async def get(self, max_body: int, headers: dict[str, str] | None = None) -> Response:
        """Raises OSError (connect), ssl.SSLError, ProtocolError, TooLarge or EOFError
        (cut off); the caller bounds the time with a timeout, which closes the connection.
        ``headers`` go with this request only (ValueError for a value a header cannot hold)."""
        request = self._get
        if headers:
            request = f"GET {self.path} HTTP/1.1\r\n{self._fixed}{_lines(headers)}\r\n".encode(
                "latin-1"
            )
        return await self._request((request,), max_body, truncate=False)

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
