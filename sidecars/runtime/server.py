"""The health and metrics HTTP server every part runs: /healthz, /readyz, /metrics.

A small HTTP/1.1 server on asyncio's own transports rather than aiohttp.web: it serves GET and
HEAD of a few fixed paths to kubelet probes and Prometheus, and importing aiohttp's server cost
each sidecar about 11 MB of memory and 0.1 s of start-up (bench/log_shipper records both), more
than the rest of a part's runtime. The bytes are parsed by httptools (llhttp); this module keeps
the policy: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request) and pipelined requests
answered in order, at most ``MAX_PIPELINED`` in flight per connection; no request bodies (a
probe or a scrape has none: 400); the head capped at 16 KiB and 100 header lines (431); a
malformed request gets 400 and ``Connection: close``; a partial head must complete within
``head_timeout`` and an idle connection closes after ``idle_timeout``; TLS when given an
SSLContext.

What a peer cannot make it hold: while the transport's write buffer is over its high-water mark
(a client that sends and does not read) the connection neither reads nor answers, and one that
stays so for ``write_timeout`` is dropped, as is the oldest of more than ``MAX_STALLED`` such
connections at once; at most ``max_connections`` are open at once (1024,
fewer under a low open-files limit: ``listen_limits``), and a new one past that
closes the oldest idle (or stalled) one, so a flood of idle connections can neither exhaust the
part's file descriptors nor lock kubelet's probe out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import ssl
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecars.runtime.health import Health
from sidecars.runtime.logs import kv
from sidecars.runtime.parsers import HostPort

log = logging.getLogger("sidecars.server")

MAX_HEAD = 16 * 1024  # request line and header lines together
MAX_HEADERS = 100
MAX_PIPELINED = 16  # requests read and not yet answered, per connection
MAX_CONNECTIONS = 1024  # per server, and never more than the fd limit leaves (below)
FD_OWN = 128  # file descriptors kept for the part's own work (files, upstreams, sinks)
HIGH_WATER = 64 * 1024  # the transport's write buffer: over it, stop reading and answering
MAX_STALLED = 32  # connections over HIGH_WATER at once; past it the oldest is dropped
_METHODS = ("GET", "HEAD")
_PER_HEADER = 4  # ": " and CRLF, counted with each header's name and value


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    headers: Mapping[str, str]  # lower-cased names; repeated headers joined with ", "


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
    )


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    path: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]
    keep_alive: bool


class _Stop(Exception):
    """Raised inside a parser callback: read no further on this connection."""


class RequestParser:
    """Bytes in, request heads out (appended to ``heads``), with this server's policy.

    ``feed`` raises BadRequest for a request to refuse (the heads completed before it stay in
    ``heads``, to be answered first). Parsing stops for good after a request that closes the
    connection, or once ``heads`` holds ``limit`` requests not yet answered: ``stopped`` then
    says so, and the bytes after it are not read (the last head is answered with
    ``Connection: close``; a client that pipelines that deep sends the rest again)."""

    def __init__(self, heads: deque[Head], limit: int = MAX_PIPELINED) -> None:
        self.heads = heads
        self.limit = limit
        self.stopped = False
        self.in_head = False  # a request has begun and its head is not complete
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._count = 0
        self._size = 0
        self._pending = 0  # bytes fed while a head stays open (llhttp buffers a partial line)
        self._head: Head | None = None

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            own = exc.__context__
            if isinstance(own, _Stop):
                self.stopped = True
                return
            self._refused()
            if isinstance(own, BadRequest):
                raise own from None
            raise BadRequest(400, f"bad request: {own!r}") from None
        except httptools.HttpParserUpgrade:
            self._refused()
            raise BadRequest(400, "protocol upgrades and CONNECT are not served here") from None
        except httptools.HttpParserError as exc:
            if self.heads and not self.heads[-1].keep_alive:
                self.stopped = True  # bytes after a request that closes: never read
                return
            self._refused()
            raise BadRequest(400, f"bad request: {exc}") from None
        if self.in_head:
            self._pending += len(data)
            if self._pending > MAX_HEAD:
                self._refused()
                raise BadRequest(431, f"request head over {MAX_HEAD // 1024} KiB")

    def _refused(self) -> None:
        self.stopped = True
        self.in_head = False

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if len(self.heads) >= self.limit:
            raise _Stop  # enough in flight: leave the rest unread
        self.in_head = True
        self._url = b""
        self._headers = {}
        self._count = self._size = self._pending = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > MAX_HEADERS:
            raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
        self._grow(len(name) + len(value) + _PER_HEADER)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self.in_head = False
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise BadRequest(400, f"unsupported HTTP version {version!r}")
        headers = self._headers
        if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
            raise BadRequest(400, "request bodies are not accepted here")
        self._head = Head(
            self._parser.get_method().decode("ascii"),
            _path(self._url),
            f"HTTP/{version}",
            headers,
            self._parser.should_keep_alive(),
        )

    def on_message_complete(self) -> None:
        assert self._head is not None
        self.heads.append(self._head)
        self._head = None
        if not self.heads[-1].keep_alive:
            raise _Stop  # nothing after a request that closes is read

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > MAX_HEAD:
            raise BadRequest(431, f"request head over {MAX_HEAD // 1024} KiB")


def _path(target: bytes) -> str:
    """The path of an origin-form (``/p?q``) or absolute-form (``http://h/p``) target."""
    if target.startswith(b"/"):
        return target.partition(b"?")[0].decode("latin-1")
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        try:
            path = httptools.parse_url(target).path
        except httptools.HttpParserInvalidURLError:
            raise BadRequest(400, f"bad request target {target[:80]!r}") from None
        return path.decode("latin-1") if path else "/"
    raise BadRequest(400, f"bad request target {target[:80]!r}")


def render(response: Response, *, head_only: bool, close: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class _Connection(asyncio.Protocol):
    """One client connection: feeds the parser, answers its requests in order, one at a time,
    and keeps the flow control and timers. Per-request state lives in ``heads``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.heads: deque[Head] = deque()  # read, not yet answered
        self.refusal: BadRequest | None = None  # answered after ``heads``, then closed
        self.parser = RequestParser(self.heads)
        self.worker: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()  # cleared while the write buffer is over its mark
        self.writable.set()
        self.reading = True
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind = ""

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=HIGH_WATER)
        if not self.server.admit(self):
            self.transport.write(
                render(text_response(503, "too many connections\n"), head_only=False, close=True)
            )
            self.transport.close()
            self.transport = None
            return
        self._update()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.parser.feed(data)
        except BadRequest as exc:
            self.refusal = exc
        if (self.heads or self.refusal is not None) and self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        self._update()

    def pause_writing(self) -> None:
        self.writable.clear()
        self.server.stall(self)
        self._update()

    def resume_writing(self) -> None:
        self.writable.set()
        self.server.stalled.pop(self, None)
        self._update()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.writable.set()  # release a writer waiting for the buffer to drain
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.worker is not None:
            self.worker.cancel()

    # --- answering -----------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while self.heads:
                await self.writable.wait()  # a client that does not read gets nothing more
                if self.transport is None:
                    return
                head = self.heads[0]
                response = await self._respond(head)
                if self.transport is None:
                    return
                last = len(self.heads) == 1 and self.refusal is None
                close = not head.keep_alive or (last and self.parser.stopped)
                self.transport.write(render(response, head_only=head.method == "HEAD", close=close))
                self.heads.popleft()
                if close:
                    self._close()
                    return
                self._update()
            if self.refusal is not None and self.transport is not None:
                await self.writable.wait()
                if self.transport is None:
                    return
                error = text_response(self.refusal.status, f"{self.refusal}\n")
                self.transport.write(render(error, head_only=False, close=True))
                self._close()
        finally:
            self.worker = None
            self._update()

    async def _respond(self, head: Head) -> Response:
        handler = self.server.routes.get(head.path)
        if handler is None:
            return text_response(404, "not found\n")
        if head.method not in _METHODS:
            return text_response(405, "method not allowed\n", {"Allow": ", ".join(_METHODS)})
        try:
            return await handler(Request(head.method, head.path, head.headers))
        except Exception:
            log.exception("handler failed", extra=kv(path=head.path))
            return text_response(500, "internal error\n")

    # --- flow control and timers ---------------------------------------------------------------

    def _update(self) -> None:
        """Bring reading, the timer and the server's idle list in line with the state."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        stalled = not self.writable.is_set()
        busy = self.worker is not None or bool(self.heads)
        # A client that pipelines (a request waiting behind the one being answered) is not
        # read again until all its requests are answered: its next ones wait in the kernel,
        # and one read brings at most MAX_PIPELINED. One request at a time costs no syscalls.
        pipelining = len(self.heads) > 1 or (busy and not self.reading)
        reading = not (stalled or pipelining or self.parser.stopped)
        if reading != self.reading:
            self.reading = reading
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()
        if stalled:
            kind = "write"
        elif busy:
            kind = ""  # a request is being answered: our own handlers bound their time
        elif self.parser.in_head:
            kind = "head"
        else:
            kind = "idle"
        if kind != self.timer_kind:  # unchanged: bytes of a slow head do not extend it
            self.timer_kind = kind
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if kind:
                wait = {
                    "write": self.server.write_timeout,
                    "head": self.server.head_timeout,
                    "idle": self.server.idle_timeout,
                }[kind]
                self.timer = asyncio.get_running_loop().call_later(wait, self._expired)
        self.server.mark(self, evictable=stalled or not busy)

    def _expired(self) -> None:
        self.timer = None
        self._close()

    def _close(self) -> None:
        """Close; a connection whose peer does not read what is buffered is cut off instead
        after ``write_timeout`` (a plain close would wait for the buffer to drain)."""
        transport = self.transport
        if transport is None:
            return
        self.server.closing(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if transport.get_write_buffer_size() == 0:
            transport.close()
        elif self.writable.is_set() and not transport.is_closing():
            transport.close()
            self.timer = asyncio.get_running_loop().call_later(
                self.server.write_timeout, transport.abort
            )
        else:
            transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def listen_limits() -> tuple[int, int]:
    """(max_connections, accept backlog) that the open-files limit allows: a part out of file
    descriptors could no longer open its logs, upstreams or sinks, nor accept kubelet. Beyond
    the connections counted, asyncio may hold several backlogs of them in transit (it accepts
    up to a backlog at a time, again on the next turn of the event loop before the last ones
    are admitted or evicted, and an evicted one's descriptor is released a turn after it is
    closed): four backlogs are kept free. A high limit gets a backlog of 1024 (asyncio's
    default, 100, is passed by a burst of scrapes or probes while the loop is busy: the kernel
    then drops the handshake and the client retries after 1, 3, 7, 15 s; nginx's default is 511;
    the kernel caps it at net.core.somaxconn), a low one 64 (a burst then waits in the kernel)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS, 1024
    backlog = max(64, min(1024, (soft - FD_OWN - MAX_CONNECTIONS) // 4))
    return max(16, min(MAX_CONNECTIONS, soft - FD_OWN - 4 * backlog)), backlog


class Server:
    """Routes (path -> handler) served on one address until ``close()``."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        head_timeout: float = 10.0,
        idle_timeout: float = 75.0,
        write_timeout: float = 10.0,
        max_connections: int | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        allowed, self.backlog = listen_limits()
        self.max_connections = max_connections or allowed
        self.connections: set[_Connection] = set()
        # Connections that may be closed to make room, in that order: closed ones still
        # flushing, then the oldest idle (no request in flight) or stalled (peer not reading).
        self.evictable: OrderedDict[_Connection, None] = OrderedDict()
        self.stalled: OrderedDict[_Connection, None] = OrderedDict()  # oldest first
        self._server: asyncio.Server | None = None

    def admit(self, connection: _Connection) -> bool:
        if len(self.connections) >= self.max_connections:
            oldest = next(iter(self.evictable), None)
            if oldest is None:
                return False  # every connection is being answered: refuse the new one
            self.evictable.pop(oldest)
            oldest.abort()  # its descriptor is released on the next turn of the event loop
        self.connections.add(connection)
        return True

    def closing(self, connection: _Connection) -> None:
        """Closed, its answer still flushing: counted until it is gone, and the first to go."""
        if connection in self.connections:
            self.evictable[connection] = None
            self.evictable.move_to_end(connection, last=False)

    def mark(self, connection: _Connection, *, evictable: bool) -> None:
        if evictable:
            if connection in self.connections and connection not in self.evictable:
                self.evictable[connection] = None
        else:
            self.evictable.pop(connection, None)

    def stall(self, connection: _Connection) -> None:
        """Each stalled connection holds an answer its peer does not read: past MAX_STALLED,
        cut off the one stalled longest, so many such peers cannot add up to much memory."""
        self.stalled[connection] = None
        if len(self.stalled) > MAX_STALLED:
            oldest, _ = self.stalled.popitem(last=False)
            oldest.abort()

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self.evictable.pop(connection, None)
        self.stalled.pop(connection, None)

    async def start(self, listen: HostPort, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self),
            listen.host or None,
            listen.port,
            reuse_address=True,
            ssl=ssl_context,
            backlog=self.backlog,
        )

    @property
    def port(self) -> int:
        """The port bound (useful with port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None


def _probe(check: Callable[[], tuple[bool, str]]) -> Handler:
    async def handler(_: Request) -> Response:
        ok, detail = check()
        body = json.dumps({"status": "ok" if ok else "fail", "detail": detail}).encode()
        return Response(200 if ok else 503, body, {"Content-Type": "application/json"})

    return handler


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def handler(request: Request) -> Response:
        # Negotiate: OpenMetrics when the scraper asks for it, the classic text format otherwise.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encoder(registry), {"Content-Type": content_type})

    return handler


def routes(
    health: Health, registry: CollectorRegistry, metrics: Handler | None = None
) -> dict[str, Handler]:
    """``metrics`` replaces the default /metrics (the registry) for a part that serves its own
    (the metrics-proxy); /healthz and /readyz are always these."""
    return {
        "/healthz": _probe(health.liveness),
        "/readyz": _probe(health.readiness),
        "/metrics": metrics or metrics_handler(registry),
    }


async def start(
    served: Mapping[str, Handler], listen: HostPort, ssl_context: ssl.SSLContext | None = None
) -> Server:
    server = Server(served)
    await server.start(listen, ssl_context)
    return server
