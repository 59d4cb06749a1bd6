"""The lean HTTP/1.1 client: its response parser, fed the way a socket delivers bytes, and how
it reads a URL. (Over real sockets: the metrics-proxy and log-shipper integration tests.)"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.runtime.http11 import Client, ProtocolError, ResponseParser, TooLarge


def feed(raw: bytes, *, step: int | None = None, max_body: int = 1 << 20) -> ResponseParser:
    parser = ResponseParser(max_body)
    step = step or len(raw) or 1
    for i in range(0, len(raw), step):
        parser.feed(raw[i : i + step])
    return parser


CONTENT_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 7])
@pytest.mark.parametrize("raw", [CONTENT_LENGTH, CHUNKED], ids=["length", "chunked"])
def test_complete_in_any_split(raw: bytes, step: int | None) -> None:
    parser = feed(raw, step=step)
    assert parser.done and parser.response is not None
    assert parser.response.body == b"hello"
    assert parser.response.keep_alive


def test_headers_are_lowercased_and_joined() -> None:
    parser = feed(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert parser.response is not None and parser.response.headers["x-a"] == "1, 2"


def test_close_delimited_body() -> None:
    parser = feed(b"HTTP/1.0 200 OK\r\n\r\nsome body")
    assert not parser.done
    parser.eof()
    assert parser.done and parser.response is not None
    assert parser.response.body == b"some body" and not parser.response.keep_alive


def test_connection_close_header_ends_keep_alive() -> None:
    parser = feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
    assert parser.response is not None and not parser.response.keep_alive


def test_interim_response_is_skipped() -> None:
    parser = feed(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + CONTENT_LENGTH)
    assert parser.response is not None and parser.response.status == 200


def test_bytes_past_the_response_end_keep_alive() -> None:
    parser = feed(CONTENT_LENGTH + b"HTTP/1.1 200")
    assert parser.response is not None and not parser.response.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        CHUNKED[:-20],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ],
    ids=["short-length", "chunked-cut", "chunk-cut"],
)
def test_cut_off_body_is_eof_error(raw: bytes) -> None:
    parser = feed(raw)
    assert not parser.done
    with pytest.raises(EOFError):
        parser.eof()


def test_closed_before_any_response() -> None:
    parser = ResponseParser(100)
    with pytest.raises(ProtocolError, match="connection closed before a complete response head"):
        parser.eof()


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"garbage garbage\r\n\r\n", "not an HTTP response"),
        (b"\x00\x01\x02", "not an HTTP response"),
        (b"RTSP/1.0 200 OK\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "Invalid status code"),
        (b"HTTP/1.1 99 OK\r\n\r\n", "Invalid status code"),
        (b"HTTP/2 200\r\n\r\n", "bad response"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "Invalid header token"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u0661\u0662\r\n\r\n".encode(), "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \uff11\r\n\r\n".encode(), "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 0\r\n\r\n",
            "unrequested Content-Encoding",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "switched protocols"),
        (CHUNKED_HEAD + b"zz\r\n", "chunk size"),
        (CHUNKED_HEAD + b"-1\r\n", "chunk size"),
        (CHUNKED_HEAD + b"+3\r\nabc\r\n", "chunk size"),
        (CHUNKED_HEAD + b"0x10\r\n", "chunk size"),
        (CHUNKED_HEAD + b"1_1\r\n", "chunk size"),
        (CHUNKED_HEAD + b" 3\r\nabc\r\n", "chunk size"),
        (CHUNKED_HEAD + "\u0661\r\n".encode(), "chunk size"),
        (CHUNKED_HEAD + b"FFFFFFFFFFFFFFFFFFFF\r\n", "Chunk size overflow"),
        (CHUNKED_HEAD + b"1\r\nabc", "after chunk data"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70000, "larger than 64 KiB"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 20000 + b"\r\n", "larger than 64 KiB"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 11, "more than 10 interim"),
    ],
)
def test_protocol_errors(raw: bytes, message: str) -> None:
    for step in (None, 3):
        with pytest.raises(ProtocolError, match=message):
            feed(raw, step=step)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n123456\r\n6\r\n123456\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n" + b"x" * 11,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11,
    ],
    ids=["declared", "chunks", "huge-chunk-size", "close-delimited"],
)
def test_body_over_the_cap(raw: bytes) -> None:
    with pytest.raises(TooLarge):
        feed(raw, max_body=10)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 400 Bad\r\nContent-Length: 11\r\n\r\nhello world",
        b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
        b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\nhello ",
        b"HTTP/1.0 400 Bad\r\n\r\nhello world",
    ],
    ids=["declared", "chunks", "huge-chunk-size", "close-delimited"],
)
def test_truncate_keeps_the_start_and_reads_past_the_rest(raw: bytes) -> None:
    parser = ResponseParser(5, truncate=True)
    parser.feed(raw)
    if not parser.done:
        with pytest.raises(EOFError) if b"FFFFF" in raw else contextlib.nullcontext():
            parser.eof()
    if parser.done:
        assert parser.response is not None and parser.response.body == b"hello"
        assert parser.response.status == 400


def test_truncate_finds_the_end_of_a_long_declared_body() -> None:
    parser = ResponseParser(3, truncate=True)
    body = b"x" * 100_000
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + body
    for i in range(0, len(raw), 4096):
        parser.feed(raw[i : i + 4096])
    assert parser.done and parser.response is not None
    assert parser.response.body == b"xxx" and parser.response.keep_alive


@pytest.mark.parametrize(
    ("url", "host", "port", "path", "host_header", "auth"),
    [
        ("http://h/x?y=1", "h", 80, "/x?y=1", "h", None),
        ("https://h:8443", "h", 8443, "/", "h:8443", None),
        ("http://[::1]:3100/loki", "::1", 3100, "/loki", "[::1]:3100", None),
        ("http://u%40x:p%3A@h/", "h", 80, "/", "h", "Basic dUB4OnA6"),
    ],
)  # fmt: skip
def test_client_for_url(url, host, port, path, host_header, auth) -> None:
    client = Client.for_url(url, headers={"User-Agent": "t"})
    assert (client.host, client.port, client.path) == (host, port, path)
    assert f"Host: {host_header}\r\n" in client._fixed
    assert (
        ("Authorization: " + auth + "\r\n" in client._fixed)
        if auth
        else ("Authorization" not in client._fixed)
    )
    assert (client.tls is not None) == url.startswith("https")


@pytest.mark.parametrize("url", ["ftp://h/", "http:///path", "h:80"])
def test_client_for_url_refuses_what_it_cannot_reach(url: str) -> None:
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        Client.for_url(url)


_VALUES = st.text(st.characters(max_codepoint=255, blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(value=_VALUES)
def test_a_per_request_header_never_breaks_out_of_its_line(value: str) -> None:
    """A GET's own headers (the config-fetcher's token, its If-None-Match) either go out as one
    header line each, or are refused: a line break or NUL never reaches the wire."""
    client = Client.for_url("http://127.0.0.1:1/x")
    sent: list[bytes] = []

    async def capture(request: tuple[bytes, ...], max_body: int, *, truncate: bool) -> None:
        sent.extend(request)

    client._request = capture  # type: ignore[method-assign]
    try:
        asyncio.run(client.get(10, headers={"Authorization": value}))
    except ValueError:
        assert any(c in value for c in "\r\n\0")
        assert not sent
        return
    (head,) = sent
    lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""] and b"\n" not in b"".join(lines)
    assert lines.count(f"Authorization: {value}".encode("latin-1")) == 1
