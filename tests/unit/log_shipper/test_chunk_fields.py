"""chunk_fields: one regex pass over a chunk gives what the per-line path gave, to the byte.

The oracle is the per-line path as it was: ``parser.parse`` per line, ``Stamper.stamp`` from
those dicts, and the NDJSON encoder dumping the dicts.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.chunk_fields import ChunkParser, Deferred
from sidecars.log_shipper.encode import ndjson
from sidecars.log_shipper.formats import LineFormats
from sidecars.log_shipper.sinks.base import Batch
from sidecars.log_shipper.timestamps import Stamper
from sidecars.runtime import nginx_log
from sidecars.runtime.nginx_log import compile_log_format, tokenize_format
from tests.unit.test_nginx_log import nginx_escape

FORMATS = [
    (nginx_log.SIDECARS, "default"),
    (nginx_log.COMBINED, "default"),
    ('$remote_addr [$time_local] "$request" $status $msec "$http_user_agent"', "default"),
    ('{"ip":"$remote_addr","t":"$time_iso8601","r":"$request","s":$status}', "json"),
    ("$remote_addr $remote_user $request_time $request", "default"),
    ('$remote_addr "$request" $status', "none"),
]
PARSERS = [compile_log_format(fmt, escape=escape) for fmt, escape in FORMATS]

# Client-controlled text: quotes, backslashes, controls, non-ASCII, and a fake time in brackets.
FREE = st.lists(
    st.one_of(
        st.sampled_from(list('"\\ -[]%{}\t\x01é😀/:')),
        st.sampled_from([" [24/Nov/2026:00:00:01 +0000]", "\\x22", "GET /a HTTP/1.1"]),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    ),
    max_size=8,
).map("".join)
# What nginx's escape=default writes: printable ASCII only (chunks then take the ASCII and bytes
# passes of chunk_fields, where the encoder writes whole records from one regex pass).
FREE_ASCII = st.lists(
    st.one_of(
        st.sampled_from(list('"\\ -[]%{}/:')),
        st.sampled_from([" [24/Nov/2026:00:00:01 +0000]", "\\x22", "GET /a HTTP/1.1", '" 200 1 "']),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    ),
    max_size=8,
).map("".join)
TYPED: dict[str, st.SearchStrategy[str]] = {
    "status": st.integers(100, 599).map(str),
    "body_bytes_sent": st.integers(0, 10**6).map(str),
    "request_time": st.integers(0, 10**5).map(lambda ms: f"{ms // 1000}.{ms % 1000:03d}"),
    "msec": st.integers(0, 2 * 10**12).map(lambda ms: f"{ms // 1000}.{ms % 1000:03d}"),
    "time_local": st.sampled_from(
        ["24/Nov/2026:00:00:00 +0000", "24/Nov/2026:00:00:01 +0100", "31/Feb/2026:00:00:00 +0000"]
    ),
    "time_iso8601": st.sampled_from(["2026-11-24T00:00:00+00:00", "2026-11-24T00:00:01Z"]),
    "remote_addr": st.sampled_from(["203.0.113.9", "::1", "-"]),
    "upstream_response_time": st.sampled_from(["-", "0.004", "0.001, 0.002 : 0.003"]),
}


@st.composite
def line_for(
    draw: st.DrawFn, parser: nginx_log.LogFormatParser, free: st.SearchStrategy[str] = FREE
) -> str:
    """A line as nginx writes it for ``parser``'s format, or now and then something else."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(free)  # garbage
    out = []
    for part in tokenize_format(parser.format):
        if isinstance(part, nginx_log.Literal):
            out.append(part.text)
        elif part.name in TYPED and kind != 1:
            out.append(draw(TYPED[part.name]))
        else:
            out.append(nginx_escape(draw(free), parser.escape))
    line = "".join(out)
    if kind == 2:  # longer than LONG_LINE: the linear-time regex's business
        line = line.replace(" ", " " + "x" * nginx_log.LONG_LINE, 1)
    return line


@st.composite
def chunks(
    draw: st.DrawFn, free: st.SearchStrategy[str] = FREE
) -> tuple[nginx_log.LogFormatParser, list[str]]:
    parser = draw(st.sampled_from(PARSERS))
    return parser, draw(st.lists(line_for(parser, free), min_size=1, max_size=12))


def per_line(parser: nginx_log.LogFormatParser, texts: list[str]) -> list[Any]:
    return [parser.parse(text) for text in texts]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk=chunks(), anchor=st.integers(0, 2**62), start=st.integers(0, 2**40))
def test_property_chunk_parse_writes_what_the_per_line_path_wrote(
    chunk: tuple[nginx_log.LogFormatParser, list[str]], anchor: int, start: int
) -> None:
    check_against_per_line(*chunk, anchor, start)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk=chunks(FREE_ASCII), anchor=st.integers(0, 2**62), start=st.integers(0, 2**40))
def test_property_ascii_chunks_write_what_the_per_line_path_wrote(
    chunk: tuple[nginx_log.LogFormatParser, list[str]], anchor: int, start: int
) -> None:
    """ASCII lines as nginx writes them, with unclosed quotes and fake status fields, which a
    regex running over the joined lines could match across a newline."""
    check_against_per_line(*chunk, anchor, start)


def check_against_per_line(
    parser: nginx_log.LogFormatParser, texts: list[str], anchor: int, start: int
) -> None:
    bounds = [start]
    for text in texts:
        bounds.append(bounds[-1] + len(text.encode()) + 1)
    expected_fields = per_line(parser, texts)
    expected_stamps = Stamper(anchor).stamp(texts, expected_fields, bounds)

    fields, times = ChunkParser(parser).parse(texts)
    stamps = Stamper(anchor).stamp(texts, fields, bounds, times)
    assert stamps == expected_stamps
    fast = Batch("/logs/access.log", "fp", texts, bounds, stamps, fields)
    slow = Batch("/logs/access.log", "fp", texts, bounds, stamps, expected_fields)
    assert ndjson(fast) == ndjson(slow)
    assert [fast.field_map(i) for i in range(len(texts))] == expected_fields
    # The unparsed count (and so the metric) is the same.
    _, unparsed, _ = LineFormats(parser).parse_chunk("fp", "/logs/access.log", texts)
    assert unparsed == expected_fields.count(None)


def test_a_clean_chunk_takes_the_one_pass_path() -> None:
    line = (
        '203.0.113.9 - - [24/Nov/2026:05:52:04 +0100] "GET /a HTTP/1.1" 200 612 '
        '"-" "curl/8.5.0" 0.012 "-"'
    )
    fields, times = ChunkParser(nginx_log.PRESETS["sidecars"]).parse([line, line])
    assert times is not None and times.texts == ["24/Nov/2026:05:52:04 +0100"] * 2
    # Reading keeps one shared marker per line; the encoder writes the fields from the line.
    assert fields == [ChunkParser(nginx_log.PRESETS["sidecars"]).deferred] * 2 or all(
        isinstance(value, Deferred) for value in fields
    )
    assert fields[0].json([line])[0].startswith('{"remote_addr":"203.0.113.9"')
    # A line holding an escape sequence is parsed alone; one that does not match sends the
    # whole chunk down the per-line path (it has to be found and counted).
    escaped = line.replace("curl/8.5.0", "curl\\x22")
    fields, times = ChunkParser(nginx_log.PRESETS["sidecars"]).parse([line, escaped])
    assert times is not None and fields[1]["http_user_agent"] == 'curl"'
    fields, times = ChunkParser(nginx_log.PRESETS["sidecars"]).parse([line, "oops"])
    assert times is None and fields[1] is None and isinstance(fields[0], dict)


SIDECARS_LINE = (
    '203.0.113.9 - - [24/Nov/2026:05:52:04 +0100] "GET /a HTTP/1.1" 200 612 "-" "curl/8.5.0" '
    '0.012 "-"'
)


def test_a_clean_piece_is_written_from_one_pass_as_the_per_line_path_writes_it() -> None:
    parser = nginx_log.PRESETS["sidecars"]
    texts = [SIDECARS_LINE, SIDECARS_LINE.replace("/a", "/b?q=%25")]
    fields, times = ChunkParser(parser).parse(texts)
    assert times is not None and all(isinstance(value, Deferred) for value in fields)
    joined = "\n".join(texts).encode()
    tails = fields[0].tails(texts, joined)
    assert tails is not None  # the shortcut holds for these lines
    bounds = [0, len(texts[0]) + 1, len(joined) + 1]
    stamps = Stamper(0).stamp(texts, fields, bounds, times)
    fast = Batch("/logs/100%.log", "fp", texts, bounds, stamps, fields)
    slow = Batch("/logs/100%.log", "fp", texts, bounds, stamps, per_line(parser, texts))
    assert ndjson(fast) == ndjson(slow)


def test_a_quoted_value_running_into_the_next_line_sends_the_chunk_down_the_per_line_path() -> None:
    """The chunk regex lets a quoted value run past a newline (faster); a line whose quote is
    never closed, followed by one that would close it, must still count as unparsed."""
    parser = nginx_log.PRESETS["sidecars"]
    cut = SIDECARS_LINE.index('" 200 612 "-"')
    texts = [SIDECARS_LINE[:cut], SIDECARS_LINE[cut:], SIDECARS_LINE]
    expected = per_line(parser, texts)
    assert expected[0] is None and expected[1] is None and expected[2] is not None
    chunk_parser = ChunkParser(parser)
    assert len(chunk_parser._scan_ascii("\n".join(texts))) == 2  # the first match spans two
    fields, times = chunk_parser.parse(texts)
    assert times is None and fields == expected
    _, unparsed, _ = LineFormats(parser).parse_chunk("fp", "/logs/access.log", texts)
    assert unparsed == 2
