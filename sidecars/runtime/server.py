"""The health and metrics HTTP server every part runs: /healthz, /readyz, /metrics.

A small HTTP/1.1 server on asyncio's own transports rather than aiohttp.web: it serves GET and
HEAD of a few fixed paths to kubelet probes and Prometheus, and importing aiohttp's server cost
each sidecar about 11 MB of memory and 0.1 s of start-up (bench/log_shipper records both), more
than the rest of a part's runtime. What it speaks: keep-alive (HTTP/1.1 by default, HTTP/1.0
on request) and pipelined requests answered in order; no request bodies (a probe or a scrape
has none: refused with 400); the head capped at 16 KiB (431); a partial head must complete
within ``head_timeout`` and an idle connection closes after ``idle_timeout``; TLS when given an
SSLContext. Head parsing is pure (``parse_head``) and tested on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecars.runtime.health import Health
from sidecars.runtime.logs import kv
from sidecars.runtime.parsers import HostPort

log = logging.getLogger("sidecars.server")

MAX_HEAD = 16 * 1024
_METHODS = ("GET", "HEAD")


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
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def parse_head(raw: bytes) -> Head:
    """A request head (without the blank line ending it) -> Head; BadRequest if malformed or if
    the request has a body."""
    text = raw.decode("latin-1")
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[0].isalpha():
        raise BadRequest(400, f"bad request line {request_line[:80]!r}")
    method, target, version = parts
    if target.startswith(("http://", "https://")):  # absolute form: keep the path
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    if not target.startswith("/"):
        raise BadRequest(400, f"bad request target {target[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, f"bad header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or length.strip() != "0":
        raise BadRequest(400, "request bodies are not accepted here")
    return Head(method, target.partition("?")[0], version, headers)


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


# Connections the kernel completes before we accept them. asyncio's default (100) is passed by
# a burst of scrapes or probes while the loop is busy: the kernel then drops the handshake and
# the client retries after 1, 3, 7, 15 s. nginx's default is 511; the kernel caps it at
# net.core.somaxconn.
LISTEN_BACKLOG = 1024


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        was_empty = not self.buffer
        self.buffer += data
        if self.task is None:
            if was_empty:
                self._arm()  # a head has started: it gets head_timeout to complete
            self._next()
        elif len(self.buffer) > MAX_HEAD:  # pipelining without limit: stop reading
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    # --- requests ------------------------------------------------------------------------------

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._fail(BadRequest(431, "request head over 16 KiB"))
            return
        if end > MAX_HEAD:
            self._fail(BadRequest(431, "request head over 16 KiB"))
            return
        raw = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        try:
            head = parse_head(raw)
        except BadRequest as exc:
            self._fail(exc)
            return
        if self.timer is not None:
            self.timer.cancel()
        self.task = asyncio.get_running_loop().create_task(self._answer(head))

    async def _answer(self, head: Head) -> None:
        handler = self.server.routes.get(head.path)
        if handler is None:
            response = text_response(404, "not found\n")
        elif head.method not in _METHODS:
            response = text_response(405, "method not allowed\n", {"Allow": ", ".join(_METHODS)})
        else:
            try:
                response = await handler(Request(head.method, head.path, head.headers))
            except Exception:
                log.exception("handler failed", extra=kv(path=head.path))
                response = text_response(500, "internal error\n")
        if self.transport is None:
            return
        close = not head.keep_alive
        self.transport.write(render(response, head_only=head.method == "HEAD", close=close))
        self.task = None
        if close:
            self._close()
            return
        self._arm()
        if self.buffer:
            self._next()  # a pipelined request waits in the buffer

    def _fail(self, error: BadRequest) -> None:
        if self.transport is not None:
            response = text_response(error.status, f"{error}\n")
            self.transport.write(render(response, head_only=False, close=True))
        self._close()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        wait = self.server.head_timeout if self.buffer else self.server.idle_timeout
        self.timer = asyncio.get_running_loop().call_later(wait, self._expired)

    def _expired(self) -> None:
        if self.task is None:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Server:
    """Routes (path -> handler) served on one address until ``close()``."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        head_timeout: float = 10.0,
        idle_timeout: float = 75.0,
    ) -> None:
        self.routes = dict(routes)
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, listen: HostPort, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self),
            listen.host or None,
            listen.port,
            reuse_address=True,
            ssl=ssl_context,
            backlog=LISTEN_BACKLOG,
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
                connection._close()
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
