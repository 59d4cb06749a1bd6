"""Property tests of both HTTP parsers (runtime/server.py's RequestParser and runtime/http11.py's
ResponseParser): arbitrary bytes, in any split, raise nothing but the module's own errors and
come back at once; valid messages round-trip whatever the split. Bounded to a few seconds."""

from __future__ import annotations

import itertools
from collections import deque

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecars.runtime.http11 import ProtocolError, ResponseParser, TooLarge
from sidecars.runtime.server import BadRequest, Head, RequestParser

FUZZ = settings(
    max_examples=300, deadline=200, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1,
                max_size=12)  # fmt: skip
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
    str.strip
)
PATH = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8), max_size=4
).map(lambda parts: "/" + "/".join(parts))


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# Bytes that look like HTTP in places, so the fuzzing gets past the first line.
PIECES = st.sampled_from(
    [b"GET ", b"HTTP/1.1", b"HTTP/1.0", b" 200 OK", b"\r\n", b"\r\n\r\n", b": ", b"/",
     b"Content-Length: ", b"Transfer-Encoding: chunked", b"Connection: close", b"0", b"9",
     b"-1", b"ff", b";x=1", b"\x00", b"\xff", b" ", b"\t", b"100 Continue", b"HTTP/1.1 101"]
)  # fmt: skip
NOISE = st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=40).map(b"".join)


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), NOISE), cuts=st.lists(st.integers(0, 500)))
def test_request_parser_takes_any_bytes(data: bytes, cuts: list[int]) -> None:
    heads: deque[Head] = deque()
    parser = RequestParser(heads)
    try:
        for piece in splits(data, cuts):
            parser.feed(piece)
    except BadRequest as exc:
        assert exc.status in (400, 431)
        assert parser.stopped
    assert len(heads) <= parser.limit
    for head in heads:
        assert head.path.startswith("/") and head.version in ("HTTP/1.1", "HTTP/1.0")


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@FUZZ
# Kept regressions: what the hand-written parser did with these (spin, ValueError, RecursionError).
@example(data=CHUNKED + b"-1\r\n", cuts=[], max_body=10, truncate=False)
@example(data=CHUNKED + b"+3\r\nabc\r\n0\r\n\r\n", cuts=[], max_body=10, truncate=False)
@example(data=b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx", cuts=[], max_body=9,
         truncate=False)  # fmt: skip
@example(data=b"HTTP/1.1 100 Continue\r\n\r\n" * 3000, cuts=[], max_body=9, truncate=False)
@given(
    data=st.one_of(st.binary(max_size=400), NOISE.map(lambda b: b"HTTP/1.1 200 OK\r\n" + b)),
    cuts=st.lists(st.integers(0, 500)),
    max_body=st.integers(0, 64),
    truncate=st.booleans(),
)
def test_response_parser_takes_any_bytes(
    data: bytes, cuts: list[int], max_body: int, truncate: bool
) -> None:
    parser = ResponseParser(max_body, truncate)
    try:
        for piece in splits(data, cuts):
            parser.feed(piece)
        parser.eof()
    except (ProtocolError, TooLarge, EOFError):
        return
    assert parser.done and parser.response is not None
    assert len(parser.response.body) <= max_body


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS"]),
    path=PATH,
    query=st.one_of(st.just(""), VALUE.map(lambda v: "?" + v.replace("#", ""))),
    headers=st.lists(st.tuples(TOKEN, VALUE), max_size=8),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    count=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 2000)),
)
def test_valid_requests_round_trip(
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    version: str,
    count: int,
    cuts: list[int],
) -> None:
    headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "connection")]
    headers = [*headers, ("Connection", "keep-alive")]
    head = f"{method} {path}{query} {version}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    heads: deque[Head] = deque()
    parser = RequestParser(heads)
    for piece in splits(head.encode() * count, cuts):
        parser.feed(piece)
    expected: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        expected[key] = f"{expected[key]}, {value}" if key in expected else value
    assert list(heads) == [Head(method, path, version, expected, True)] * count
    assert not parser.in_head and not parser.stopped


@FUZZ
@given(
    status=st.integers(200, 599).filter(lambda s: s not in (204, 304)),
    headers=st.lists(st.tuples(TOKEN.map(lambda n: "X-" + n), VALUE), max_size=6),
    body=st.binary(max_size=300),
    framing=st.sampled_from(["length", "chunked", "close"]),
    chunk_sizes=st.lists(st.integers(1, 64), min_size=1),
    interim=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 2000)),
)
def test_valid_responses_round_trip(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    framing: str,
    chunk_sizes: list[int],
    interim: int,
    cuts: list[int],
) -> None:
    lines = [f"HTTP/1.1 {status} Whatever"] + [f"{name}: {value}" for name, value in headers]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        payload, rest, i = b"", body, 0
        while rest:
            size = chunk_sizes[i % len(chunk_sizes)]
            payload += b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size])
            rest, i = rest[size:], i + 1
        payload += b"0\r\n\r\n"
    else:
        lines.append("Connection: close")
        payload = body
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" * interim
    raw += ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    parser = ResponseParser(len(body))
    for piece in splits(raw, cuts):
        parser.feed(piece)
    if framing == "close":
        assert not parser.done
        parser.eof()
    assert parser.done and parser.response is not None
    response = parser.response
    assert (response.status, response.body) == (status, body)
    assert response.keep_alive == (framing != "close")
    for name, value in headers:
        assert value in response.headers[name.lower()]
