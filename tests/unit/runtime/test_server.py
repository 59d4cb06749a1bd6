"""The health/metrics server: its request parser, and the server itself over real sockets (TCP and
TLS) with the clients that meet it in a Pod (kubelet-style one-shot GETs, Prometheus' kept-alive
scrapes) and the ones it must refuse."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator

import pytest
import trustme
from prometheus_client import CollectorRegistry, Counter

from sidecars.runtime.health import Health
from sidecars.runtime.http11 import Client, ProtocolError
from sidecars.runtime.parsers import HostPort
from sidecars.runtime.server import (
    MAX_PIPELINED,
    MAX_STALLED,
    BadRequest,
    Head,
    Request,
    RequestParser,
    Response,
    Server,
    _Connection,
    render,
    routes,
)

# --- the request parser (httptools under this server's policy) -------------------------------


def parse(raw: bytes, *, step: int | None = None) -> tuple[list[Head], RequestParser]:
    heads: deque[Head] = deque()
    parser = RequestParser(heads)
    step = step or len(raw) or 1
    for i in range(0, len(raw), step):
        parser.feed(raw[i : i + step])
    return list(heads), parser


def one(raw: bytes) -> Head:
    heads, parser = parse(raw + b"\r\n\r\n")
    assert len(heads) == 1 and not parser.in_head
    return heads[0]


@pytest.mark.parametrize("step", [None, 1, 5])
def test_parse_heads(step: int | None) -> None:
    raw = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: a\r\naccept: b\r\n\r\n" * 2
    heads, parser = parse(raw, step=step)
    assert len(heads) == 2 and not parser.stopped and not parser.in_head
    head = heads[0]
    assert (head.method, head.path, head.version) == ("GET", "/metrics", "HTTP/1.1")
    assert head.headers == {"host": "a", "accept": "a, b"}
    assert head.keep_alive


def test_parse_head_forms() -> None:
    assert one(b"GET http://h:1/readyz HTTP/1.1").path == "/readyz"
    assert one(b"GET http://h:1 HTTP/1.1").path == "/"
    assert not one(b"GET / HTTP/1.1\r\nConnection: close").keep_alive
    assert not one(b"GET / HTTP/1.0").keep_alive
    assert one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    assert one(b"GET / HTTP/1.1\r\nContent-Length: 0").path == "/"
    assert one(b"HEAD /x HTTP/1.1").method == "HEAD"


def test_a_partial_head_is_in_head() -> None:
    heads, parser = parse(b"GET /healthz HTTP/1.1\r\nHo")
    assert not heads and parser.in_head


def test_nothing_after_a_request_that_closes_is_read() -> None:
    heads, parser = parse(
        b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\nGET /d HTTP/1.1\r\n\r\n"
    )
    assert [head.path for head in heads] == ["/a"] and parser.stopped


def test_pipelining_stops_at_the_limit() -> None:
    heads, parser = parse(b"GET /x HTTP/1.1\r\n\r\n" * (MAX_PIPELINED + 5))
    assert len(heads) == MAX_PIPELINED and parser.stopped


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET /", 400, "unsupported HTTP version"),
        (b"GET / HTTP/2.0", 400, "unsupported HTTP version"),
        (b"G3T / HTTP/1.1", 400, "bad request"),
        (b"GET metrics HTTP/1.1", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nNo colon here", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n folded", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nName : v", 400, "bad request"),
        (b"GET / HTTP/1.1\nHost: x\n", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nX: a\x00b", 400, "bad request"),
        (b"POST / HTTP/1.1\r\nContent-Length: 3", 400, "request bodies"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 400, "request bodies"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1", 400, "bad request"),
        (b"CONNECT h:1 HTTP/1.1", 400, "bad request"),
        (b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade", 400, "upgrades"),
        (b"GET /" + b"a" * 17000 + b" HTTP/1.1", 431, "head over 16 KiB"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 17000, 431, "head over 16 KiB"),
        (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101, 431, "more than 100 header lines"),
    ],
)
def test_parse_head_refuses(raw: bytes, status: int, message: str) -> None:
    for step in (None, 1000):
        with pytest.raises(BadRequest, match=message) as caught:
            parse(b"GET /ok HTTP/1.1\r\n\r\n" + raw + b"\r\n\r\n", step=step)
        assert caught.value.status == status


def test_an_unfinished_head_past_the_cap_is_refused() -> None:
    heads: deque[Head] = deque()
    parser = RequestParser(heads)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    with pytest.raises(BadRequest, match="head over 16 KiB") as caught:
        for _ in range(20):
            parser.feed(b"a" * 1024)
    assert caught.value.status == 431 and parser.stopped


def test_render() -> None:
    response = Response(503, b"{}", {"Content-Type": "application/json"})
    assert render(response, head_only=False, close=True) == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n\r\n{}"
    )
    assert render(response, head_only=True, close=False).endswith(b"json\r\n\r\n")


# --- the server over sockets -----------------------------------------------------------------


class Served:
    def __init__(self, server: Server, health: Health, counter: Counter) -> None:
        self.server, self.health, self.counter = server, health, counter

    @property
    def port(self) -> int:
        return self.server.port

    async def exchange(self, raw: bytes, *, until_close: bool = True) -> bytes:
        """Send raw bytes, return everything read until the server closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    health = Health(stale_after=None)
    registry = CollectorRegistry()
    counter = Counter("things", "things done", registry=registry)

    async def boom(_: Request) -> Response:
        raise RuntimeError("handler bug")

    server = Server({**routes(health, registry), "/boom": boom}, head_timeout=0.3, idle_timeout=0.6)
    await server.start(HostPort("127.0.0.1", 0))
    try:
        yield Served(server, health, counter)
    finally:
        await server.close()


async def test_probes_and_metrics_over_one_kept_alive_connection(served: Served) -> None:
    served.counter.inc(3)
    client = Client.for_url(f"http://127.0.0.1:{served.port}/readyz")
    try:
        response = await client.get(1 << 20)
        assert response.status == 503 and response.keep_alive
        assert json.loads(response.body) == {"status": "fail", "detail": "starting"}
        served.health.set_ready(True, "serving")
        response = await client.get(1 << 20)
        assert response.status == 200
        assert json.loads(response.body) == {"status": "ok", "detail": "serving"}
        assert response.headers["content-type"] == "application/json"
    finally:
        client.close()
    metrics = Client.for_url(
        f"http://127.0.0.1:{served.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    try:
        response = await metrics.get(1 << 20)
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert b"things_total 3.0" in response.body and response.body.endswith(b"# EOF\n")
    finally:
        metrics.close()


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    raw = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        b"DELETE /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await served.exchange(raw)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"200", b"404", b"405", b"500"]
    assert b"Allow: GET, HEAD" in answer
    # HEAD: the metrics body's length announced, no body: the next answer follows the head.
    second = answer.index(b"HTTP/1.1 200 OK", 1)
    blank = answer.index(b"\r\n\r\n", second)
    assert answer[blank + 4 :].startswith(b"HTTP/1.1 404")
    assert b"Content-Length: 0" not in answer[second:blank]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"BOGUS\r\n\r\n", b"400"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"400"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * (20 * 1024) + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * (20 * 1024), b"431"),
    ],
    ids=["garbage", "body", "huge-head", "huge-unfinished-head"],
)
async def test_bad_requests_get_an_answer_and_the_connection_closes(
    served: Served, raw: bytes, status: bytes
) -> None:
    answer = await served.exchange(raw)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in answer


async def test_http10_is_closed_after_its_answer(served: Served) -> None:
    answer = await served.exchange(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'"}')


@pytest.mark.parametrize(
    "raw", [b"", b"GET /healthz HTTP/1.1\r\nHost"], ids=["idle", "unfinished-head"]
)
async def test_idle_and_stalled_connections_are_closed(served: Served, raw: bytes) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await served.exchange(raw) == b""
    assert loop.time() - started < 5
    assert not served.server.connections


async def test_tls(tmp_path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    health = Health(stale_after=None)
    server = Server(routes(health, CollectorRegistry()))
    await server.start(HostPort("127.0.0.1", 0), context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = Client.for_url(f"https://127.0.0.1:{server.port}/healthz", ca_file=str(ca_file))
    try:
        response = await client.get(1 << 20)
        assert response.status == 200
        plain = Client.for_url(f"http://127.0.0.1:{server.port}/healthz")
        with pytest.raises((ProtocolError, ConnectionError)):
            await asyncio.wait_for(plain.get(1 << 20), 5)
        plain.close()
    finally:
        client.close()
        await server.close()


# --- the connection protocol over a scripted transport (flow control, caps) ------------------


class FakeTransport(asyncio.Transport):
    """Records what the protocol does; ``buffered`` stands for the write buffer's size."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.buffered = 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def scripted(server: Server) -> tuple[_Connection, FakeTransport]:
    connection = _Connection(server)
    transport = FakeTransport()
    connection.connection_made(transport)
    return connection, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_stalled_writer_answers_nothing_more_until_resumed() -> None:
    server = Server(routes(Health(stale_after=None), CollectorRegistry()))
    connection, transport = scripted(server)
    connection.data_received(b"GET /healthz HTTP/1.1\r\n\r\n" * 3)
    assert not transport.reading  # a pipelining client is not read until all are answered
    connection.pause_writing()  # the peer does not read: the buffer is over its mark
    await settle()
    assert transport.written == b"" and not transport.reading
    assert connection in server.stalled and connection in server.evictable
    connection.resume_writing()
    await settle()
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert transport.reading and connection not in server.stalled


async def test_connection_lost_releases_a_waiting_writer() -> None:
    server = Server(routes(Health(stale_after=None), CollectorRegistry()))
    connection, transport = scripted(server)
    connection.pause_writing()
    connection.data_received(b"GET /healthz HTTP/1.1\r\n\r\n")
    await settle()
    worker = connection.worker
    assert worker is not None and not worker.done()
    connection.connection_lost(None)
    await settle()
    assert worker.done() and transport.written == b""
    assert not server.connections and not server.stalled


async def test_past_the_cap_the_oldest_idle_connection_makes_room() -> None:
    server = Server(routes(Health(stale_after=None), CollectorRegistry()), max_connections=2)
    first, first_transport = scripted(server)
    second, _ = scripted(server)
    second.data_received(b"GET /healthz HTTP/1.1\r\nHost: x")  # a head begun: still idle
    third, third_transport = scripted(server)
    assert first_transport.aborted and not third_transport.is_closing()
    first.connection_lost(None)
    assert server.connections == {second, third}


async def test_past_the_cap_with_every_connection_busy_the_new_one_is_refused() -> None:
    release = asyncio.Event()

    async def slow(_: Request) -> Response:
        await release.wait()
        return Response(200, b"ok")

    server = Server({"/slow": slow}, max_connections=1)
    busy, _ = scripted(server)
    busy.data_received(b"GET /slow HTTP/1.1\r\n\r\n")
    await settle()
    _, refused = scripted(server)
    assert refused.written.startswith(b"HTTP/1.1 503 ") and refused.closed
    release.set()
    await settle()


async def test_more_stalled_connections_than_the_cap_drop_the_oldest() -> None:
    server = Server(routes(Health(stale_after=None), CollectorRegistry()))
    made = [scripted(server) for _ in range(MAX_STALLED + 1)]
    for connection, _ in made:
        connection.pause_writing()
    assert made[0][1].aborted and not made[1][1].aborted
    assert len(server.stalled) == MAX_STALLED
