"""RELP frame encoding and the incremental frame parser (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.sinks.relp import parse_relp_url
from sidecars.log_shipper.sinks.relp_frames import (
    MAX_TXNR,
    Frame,
    FrameParser,
    RelpProtocolError,
    encode_frame,
    next_txnr,
    open_offers,
    parse_offers,
    parse_response,
    txnr_run,
)


def test_encode_frames() -> None:
    assert encode_frame(1, "open", b"relp_version=0") == b"1 open 14 relp_version=0\n"
    assert encode_frame(7, "close") == b"7 close 0\n"
    assert encode_frame(2, "syslog", b"\n\x00\xff") == b"2 syslog 3 \n\x00\xff\n"
    with pytest.raises(ValueError, match="out of range"):
        encode_frame(MAX_TXNR + 1, "syslog", b"x")


def test_txnr_wraps_to_one() -> None:
    assert next_txnr(0) == 1
    assert next_txnr(41) == 42
    assert next_txnr(MAX_TXNR) == 1
    assert list(txnr_run(0, 3)) == [1, 2, 3]
    assert list(txnr_run(MAX_TXNR - 2, 4)) == [MAX_TXNR - 1, MAX_TXNR, 1, 2]
    assert list(txnr_run(MAX_TXNR - 1, 1)) == [MAX_TXNR]


def test_feed_acks_separates_plain_ok_answers_in_order() -> None:
    stream = (
        b"5 rsp 6 200 OK\n6 rsp 6 200 OK\n7 rsp 9 500 error\n8 rsp 6 200 OK\n"
        b"0 serverclose 0\n9 rsp 6 200 O"
    )
    parser = FrameParser()
    acks, frames = parser.feed_acks(stream)
    assert acks == [5, 6, 8]
    assert frames == [Frame(7, "rsp", b"500 error"), Frame(0, "serverclose", b"")]
    assert parser.feed_acks(b"K\n") == ([9], [])


def test_open_offers_name_syslog_command() -> None:
    offers = parse_offers(open_offers())
    assert offers["relp_version"] == "0"
    assert offers["commands"] == "syslog"
    assert offers["relp_software"].startswith("sidecars,")


def test_parse_server_frames_including_serverclose() -> None:
    hello = (
        b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,https://www.rsyslog.com"
        b"\ncommands=syslog"
    )
    stream = (
        encode_frame(1, "rsp", hello)
        + b"2 rsp 6 200 OK\n"
        + b"3 rsp 0\n"
        + b"4 rsp 0 \n"
        + b"0 serverclose 0\n"
    )
    frames = FrameParser().feed(stream)
    assert [(f.txnr, f.command) for f in frames] == [
        (1, "rsp"),
        (2, "rsp"),
        (3, "rsp"),
        (4, "rsp"),
        (0, "serverclose"),
    ]
    answer = parse_response(frames[0].data)
    assert (answer.code, answer.text, answer.ok) == (200, "OK", True)
    assert parse_offers(answer.data)["commands"] == "syslog"
    assert frames[2].data == b""


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.builds(
            Frame,
            txnr=st.integers(0, MAX_TXNR),
            command=st.sampled_from(["rsp", "serverclose", "syslog"]),
            data=st.one_of(st.just(b"200 OK"), st.binary(max_size=200)),
        ),
        max_size=15,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_round_trip_with_any_chunking(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f.txnr, f.command, f.data) for f in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parser, fast = FrameParser(), FrameParser()
    got: list[Frame] = []
    acks: list[int] = []
    others: list[Frame] = []
    for a, b in itertools.pairwise(points):
        got += parser.feed(stream[a:b])
        more_acks, more_frames = fast.feed_acks(stream[a:b])
        acks += more_acks
        others += more_frames
    assert got == frames
    plain_ok = [f for f in frames if f.command == "rsp" and f.data == b"200 OK"]
    assert acks == [f.txnr for f in plain_ok]
    assert others == [f for f in frames if f not in plain_ok]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "not a RELP frame"),
        (b"1234567890 rsp 0\n", "not a RELP frame"),
        (b"1 rsp 6 200 OKX", "missing LF trailer"),
        (b"1 rsp 3X200\n", "expected a space before DATA"),
        (b"1 rsp 2000000 ", "exceeds"),
        (b"1 r$p 0\n", "not a RELP frame"),
        (b"<190>1 2026-11-24T00:00:00Z", "not a RELP frame"),
    ],
)
def test_garbage_is_a_protocol_error(stream: bytes, message: str) -> None:
    with pytest.raises(RelpProtocolError, match=message):
        FrameParser().feed(stream)


def test_incomplete_frames_wait_for_more() -> None:
    parser = FrameParser()
    assert parser.feed(b"12") == []
    assert parser.feed(b" rs") == []
    assert parser.feed(b"p 6") == []
    assert parser.feed(b" 200 O") == []
    assert parser.feed(b"K") == []
    assert parser.feed(b"\n") == [Frame(12, "rsp", b"200 OK")]


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [(b"200 OK", 200, "OK"), (b"500 queue full", 500, "queue full"), (b"500", 500, "")],
)
def test_parse_response(data: bytes, code: int, text: str) -> None:
    response = parse_response(data)
    assert (response.code, response.text, response.ok) == (code, text, code == 200)


@pytest.mark.parametrize("data", [b"", b"OK", b"20 OK", b"2000 OK"])
def test_parse_response_rejects_missing_code(data: bytes) -> None:
    with pytest.raises(RelpProtocolError, match="3-digit code"):
        parse_response(data)


def test_parse_offers_tolerates_bare_names() -> None:
    assert parse_offers(b"a=1\nb\n\nc=x=y") == {"a": "1", "b": "", "c": "x=y"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:2514", ("127.0.0.1", 2514)),
        ("relp://rsyslog.logging:2514", ("rsyslog.logging", 2514)),
        ("[::1]:20514", ("::1", 20514)),
    ],
)
def test_relp_urls(url: str, expected: tuple[str, int]) -> None:
    assert parse_relp_url(url) == expected


@pytest.mark.parametrize(
    "url", ["", "rsyslog", ":2514", "host:0", "host:99999", "tcp://host:2514", "relp://h:1/x"]
)
def test_bad_relp_urls(url: str) -> None:
    with pytest.raises(ValueError, match="RELP address"):
        parse_relp_url(url)
