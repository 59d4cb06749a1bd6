"""The shared HTTP client (runtime/http11.py) against hostile peers: small asyncio servers on
127.0.0.1 answering what no real nginx or Loki would. Every odd answer must end as the client's
own error (ProtocolError, TooLarge; EOFError for a cut-off body), so that the metrics-proxy and
the log-shipper count it as the peer's failure, and nothing a peer sends may stall the event
loop. Each scenario runs on an event loop in its own thread, joined with a deadline: a client
that spins (as one parsing chunk size -1 with ``int(x, 16)`` did) fails the test instead of
hanging the run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sidecars.metrics_proxy.client import Fetcher, FetchError, parse_target
from sidecars.runtime.http11 import Client, ProtocolError, TooLarge

pytestmark = pytest.mark.integration

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_BODY = b"Active connections: 1 \n"


def bounded(scenario: Callable[[], Awaitable[Any]], limit: float = 20.0) -> Any:
    """Run ``scenario`` on a fresh event loop in a thread; its result, or its exception
    raised here; fail if the loop is still busy after ``limit`` seconds."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(scenario())
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"the client's event loop did not come back within {limit:g}s (stuck)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def answers(raw: bytes, *, then_close: bool = True) -> Peer:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if not then_close:
            await reader.read()  # hold the connection until the client gives up
        writer.close()

    return peer


def forever(first: bytes, repeat: bytes) -> Peer:
    """``first``, then ``repeat`` over and over until the client goes away."""

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(first)
        try:
            while True:
                writer.write(repeat)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return peer


async def serve(peer: Peer) -> tuple[asyncio.Server, str]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await peer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/metrics"


def get(peer: Peer, *, max_body: int = 1 << 20, timeout: float = 5.0) -> Any:
    async def scenario() -> Any:
        server, url = await serve(peer)
        client = Client.for_url(url)
        try:
            async with asyncio.timeout(timeout):
                return await client.get(max_body)
        finally:
            client.close()
            server.close()

    return bounded(scenario)


def fetch(peer: Peer, *, max_bytes: int = 1 << 20, timeout: float = 5.0) -> FetchError:
    """The metrics-proxy's Fetcher against ``peer``: the FetchError it raised."""

    async def scenario() -> FetchError:
        server, url = await serve(peer)
        fetcher = Fetcher(parse_target(url), timeout=timeout, max_bytes=max_bytes)
        try:
            await fetcher.get()
        except FetchError as exc:
            return exc
        finally:
            await fetcher.close()
            server.close()
        raise AssertionError("the fetch succeeded")

    return bounded(scenario)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
ODD_CHUNK_SIZES = {
    "-1": b"-1\r\n",
    "+3": b"+3\r\nabc\r\n0\r\n\r\n",
    "0x10": b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    "1_1": b"1_1\r\n" + b"a" * 17 + b"\r\n0\r\n\r\n",
    "space before": b" 3\r\nabc\r\n0\r\n\r\n",
    "Arabic-Indic digit": "\u0663\r\nabc\r\n0\r\n\r\n".encode(),
    "past 64 bits": b"1" + b"0" * 16 + b"\r\n",
}


@pytest.mark.parametrize("chunk", ODD_CHUNK_SIZES.values(), ids=ODD_CHUNK_SIZES.keys())
def test_odd_chunk_sizes_are_protocol_errors(chunk: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"(?i)chunk size"):
        get(answers(CHUNKED + chunk, then_close=False))
    assert fetch(answers(CHUNKED + chunk, then_close=False)).reason == "protocol"


NON_ASCII_LENGTHS = {  # the header's bytes; str.isdigit() is true for each as text
    "superscript, latin-1": "\u00b9\u00b2".encode("latin-1"),
    "Arabic-Indic, UTF-8": "\u0661\u0662".encode(),
    "fullwidth, UTF-8": "\uff11\uff12".encode(),
}


@pytest.mark.parametrize("digits", NON_ASCII_LENGTHS.values(), ids=NON_ASCII_LENGTHS.keys())
def test_non_ascii_digits_in_content_length_are_refused(digits: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: " + digits + b"\r\n\r\n" + b"x" * 12
    with pytest.raises(ProtocolError, match="Content-Length"):
        get(answers(raw, then_close=False))
    assert fetch(answers(raw, then_close=False)).reason == "protocol"


def test_endless_interim_answers_are_refused_before_the_callers_timeout() -> None:
    peer = forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n")
    with pytest.raises(ProtocolError, match="interim"):
        get(peer, timeout=10)
    assert fetch(forever(b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")).reason == (
        "protocol"
    )


BODIES_PAST_THE_CAP = {
    "declared": answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n", then_close=False),
    "chunks without end": forever(CHUNKED, b"1000\r\n" + b"x" * 4096 + b"\r\n"),
    "until close, without end": forever(b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 4096),
}


@pytest.mark.parametrize("peer", BODIES_PAST_THE_CAP.values(), ids=BODIES_PAST_THE_CAP.keys())
def test_a_body_past_its_cap_is_too_large(peer: Peer) -> None:
    with pytest.raises(TooLarge):
        get(peer, max_body=64 * 1024)
    assert fetch(peer, max_bytes=64 * 1024).reason == "too_large"


def test_a_truncated_answer_keeps_only_its_cap() -> None:
    body = b"e" * 1_000_000

    async def scenario() -> Any:
        server, url = await serve(
            answers(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n" + body)
        )
        client = Client.for_url(url)
        try:
            async with asyncio.timeout(5):
                return await client.post(b"batch", {}, max_body=300)
        finally:
            client.close()
            server.close()

    response = bounded(scenario)
    assert response.status == 500 and response.body == body[:300]


STALLS = {
    "no answer": b"",
    "half a head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "half a body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
    "half a chunk": CHUNKED + b"10\r\nabc",
}


@pytest.mark.parametrize("sent", STALLS.values(), ids=STALLS.keys())
def test_a_peer_that_stalls_is_bounded_by_the_callers_timeout(sent: bytes) -> None:
    """The caller's timeout ends the wait and closes the connection; the same client then
    works on a fresh connection (no stale bytes of the stalled answer read as the next)."""
    good = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_BODY), OK_BODY)

    async def scenario() -> tuple[bool, bytes]:
        calls = 0
        closed = asyncio.Event()

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal calls
            calls += 1
            await read_request(reader)
            if calls == 1:
                writer.write(sent)
                await writer.drain()
                await reader.read()  # until the client closes its side
                closed.set()
            else:
                writer.write(good)
                await writer.drain()
                await reader.read()
            writer.close()

        server, url = await serve(peer)
        client = Client.for_url(url)
        try:
            timed_out = False
            try:
                async with asyncio.timeout(0.5):
                    await client.get(1 << 20)
            except TimeoutError:
                timed_out = True
            async with asyncio.timeout(5):
                await closed.wait()
                response = await client.get(1 << 20)
            return timed_out, response.body
        finally:
            client.close()
            server.close()

    assert bounded(scenario) == (True, OK_BODY)
    assert fetch(answers(sent, then_close=False), timeout=0.5).reason == "timeout"
