"""RFC 5424 formatting and octet-counting framing (pure)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.sinks.base import Batch, Record
from sidecars.log_shipper.sinks.rfc5424 import (
    OctetCountingDecoder,
    OctetCountingError,
    Rfc5424Formatter,
    encode_text,
    format_timestamp,
    msgid_for_path,
    octet_counted,
    sd_element,
    sd_escape,
)

NS = 1_795_499_519_401_234_567


def record(line: str, fields: dict[str, str] | None = None, path: str = "/l/access.log") -> Record:
    return Record(line, fields, path, "fp1", 10, 10 + len(line) + 1, NS)


def test_message_layout() -> None:
    fmt = Rfc5424Formatter(hostname="web-0", procid="12")
    assert fmt.message(record("GET / 200")) == (
        b"<190>1 2026-11-24T05:51:59.401234Z web-0 nginx 12 access - GET / 200"
    )


def test_empty_line_has_no_trailing_space_and_msgid_follows_the_file() -> None:
    fmt = Rfc5424Formatter(hostname="h", app_name="app", msgid=None)
    assert fmt.message(record("", path="/var/log/nginx/error.log.1")) == (
        b"<190>1 2026-11-24T05:51:59.401234Z h app - error -"
    )
    fixed = Rfc5424Formatter(hostname="h", msgid="web")
    assert b" h nginx - web - x" in fixed.message(record("x"))


def test_default_hostname_is_valid_header_text() -> None:
    hostname = Rfc5424Formatter().hostname
    assert hostname and all(33 <= ord(c) <= 126 for c in hostname)


def test_structured_data_escapes_param_values() -> None:
    fmt = Rfc5424Formatter(hostname="h", structured=True)
    message = fmt.message(record("x", {"status": "200", 'we"ird name]': 'a"b]c\\'}))
    assert message == (
        b"<190>1 2026-11-24T05:51:59.401234Z h nginx - access "
        b'[file@32473 path="/l/access.log" fp="fp1" offset="10"]'
        b'[nginx@32473 status="200" we_ird_name_="a\\"b\\]c\\\\"] x'
    )


def test_sd_helpers() -> None:
    assert sd_escape("plain") == "plain"
    assert sd_escape('"]\\') == '\\"\\]\\\\'
    assert sd_element("x@1", [("a" * 40, "v"), ("", "e")]) == f'[x@1 {"a" * 32}="v" _="e"]'


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"app_name": "my app"}, "syslog app-name 'my app' must be printable ASCII"),
        ({"app_name": ""}, "syslog app-name '' must be printable ASCII"),
        ({"app_name": "a" * 49}, "longer than 48 characters"),
        ({"hostname": "h\u00e9"}, "syslog hostname"),
        ({"procid": "1 2"}, "syslog procid"),
        ({"msgid": "m" * 33}, "syslog msgid"),
        ({"facility": 24}, "facility must be 0-23"),
        ({"severity": -1}, "severity 0-7"),
    ],
)
def test_bad_header_settings_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rfc5424Formatter(**kwargs)  # type: ignore[arg-type]


def test_msgid_for_path_cleans_names() -> None:
    assert msgid_for_path("/var/log/nginx/access.log") == "access"
    assert msgid_for_path("/x/my site.log") == "my_site"
    assert msgid_for_path("/x/.hidden") == "-"
    assert len(msgid_for_path("/x/" + "n" * 100 + ".log")) == 32


def test_timestamp_has_microseconds_in_utc() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(NS) == "2026-11-24T05:51:59.401234Z"


def test_encode_text_keeps_surrogateescaped_bytes() -> None:
    assert encode_text("caf\u00e9") == b"caf\xc3\xa9"
    assert encode_text("a\udcff") == b"a\xff"
    assert encode_text("lone \ud800") == b"lone ?"


def test_octet_counting_counts_bytes_not_characters() -> None:
    assert octet_counted("\u00e9".encode()) == b"2 \xc3\xa9"


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_octet_counting_round_trip_with_any_chunking(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(octet_counted(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = OctetCountingDecoder()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += decoder.feed(stream[a:b])
    assert got == messages
    assert decoder.pending == 0


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"abc def", "bad message length"),
        (b"012 x", "bad message length"),
        (b"0 ", "bad message length"),  # RFC 6587: MSG-LEN starts with a non-zero digit
        (b"123456789012", "no message length within 11 digits"),
        (b"99999 " + b"x", "exceeds 100"),
    ],
)
def test_octet_counting_decoder_rejects_garbage(stream: bytes, message: str) -> None:
    with pytest.raises(OctetCountingError, match=message):
        OctetCountingDecoder(max_message=100).feed(stream)


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.text(max_size=50), min_size=1, max_size=20),
    structured=st.booleans(),
)
def test_batch_columns_give_the_same_messages_as_records(
    lines: list[str], structured: bool
) -> None:
    bounds = [0]
    for line in lines:
        bounds.append(bounds[-1] + len(encode_text(line)) + 1)
    stamps = [NS + i * 999_999 for i in range(len(lines))]
    fields = [{"n": str(i)} for i in range(len(lines))]
    batch = Batch("/l/access.log", "fp", lines, bounds, stamps, fields)
    fmt = Rfc5424Formatter(hostname="h", structured=structured)
    assert fmt.messages(batch) == [fmt.message(record) for record in batch]


def test_batch_with_surrogateescaped_line_keeps_its_bytes() -> None:
    batch = Batch("/l/access.log", "fp", ["ok", "bad \udcff"], [0, 3, 9], [NS, NS])
    fmt = Rfc5424Formatter(hostname="h")
    assert [m.rsplit(b" ", 1)[1] for m in fmt.messages(batch)] == [b"ok", b"\xff"]


def test_options_from_the_factory_configure_the_sinks() -> None:
    from sidecars.log_shipper.sinks import build_sink, parse_sink
    from sidecars.log_shipper.sinks.options import SinkOptions

    options = SinkOptions(send_timeout=3.0, hostname="pod-7")
    relp = build_sink(parse_sink("relp=127.0.0.1:2514"), options)
    syslog = build_sink(parse_sink("syslog=tcp://127.0.0.1:514"), options)
    assert (relp.name, relp.timeout, relp.formatter.hostname) == ("relp", 3.0, "pod-7")
    assert (syslog.name, syslog.timeout, syslog.formatter.hostname) == ("syslog", 3.0, "pod-7")
