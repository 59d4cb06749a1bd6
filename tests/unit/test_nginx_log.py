"""nginx_log: format compiler, presets, unescaping, time and typed field helpers (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.runtime import nginx_log
from sidecars.runtime.nginx_log import (
    PRESETS,
    compile_log_format,
    load_log_format,
    parse_log_format_directive,
    parse_msec,
    parse_time_iso8601,
    parse_time_local,
    timestamp_ns,
)

REPO = Path(__file__).resolve().parents[2]

SIDECARS_LINE = (
    '203.0.113.9 - alice [24/Nov/2026:05:52:04 +0100] "GET /a?b=1 HTTP/1.1" 200 612 '
    '"https://example.com/x" "Mozilla/5.0 (X11; Linux x86_64)" 0.012 "0.004, 0.008"'
)


# --- a model of what nginx writes, used to generate lines -------------------------------------


def nginx_escape(value: str, escape: str) -> str:
    """What nginx writes for a variable's value (checked against nginx 1.22 by the integration
    test tests/integration/test_nginx_log_formats.py)."""
    if escape == "none":
        return value
    out = []
    for byte in value.encode("utf-8"):
        ch = chr(byte)
        if escape == "default":
            if byte in (0x22, 0x5C) or byte < 0x20 or byte >= 0x7F:
                out.append(f"\\x{byte:02X}")
            else:
                out.append(ch)
        elif ch in '"\\':
            out.append("\\" + ch)
        elif byte < 0x20:
            simple = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
            out.append(simple.get(ch, f"\\u{byte:04X}"))
        else:
            out.append(ch)
    written = "".join(out)
    if escape == "json":
        # Raw bytes >= 0x80 go out as they are; reassemble them into text.
        return written.encode("latin-1", "surrogateescape").decode("utf-8")
    return written


# --- compiling --------------------------------------------------------------------------------


def test_combined_preset_parses_nginx_combined_line() -> None:
    line = (
        '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
    )
    assert PRESETS["combined"].parse(line) == {
        "remote_addr": "127.0.0.1",
        "remote_user": "-",
        "time_local": "10/Oct/2000:13:55:36 -0700",
        "request": "GET /apache_pb.gif HTTP/1.0",
        "status": "200",
        "body_bytes_sent": "2326",
        "http_referer": "http://www.example.com/start.html",
        "http_user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)",
    }


def test_sidecars_preset_parses_its_line() -> None:
    fields = PRESETS["sidecars"].parse(SIDECARS_LINE)
    assert fields is not None
    assert fields["remote_user"] == "alice"
    assert fields["request_time"] == "0.012"
    assert fields["upstream_response_time"] == "0.004, 0.008"


def test_sidecars_preset_is_the_app_nginx_conf_format() -> None:
    conf = (REPO / "apps" / "nginx" / "nginx.conf").read_text()
    match = re.search(r"^\s*(log_format\s+sidecars\b[^;]*;)", conf, re.MULTILINE)
    assert match, "apps/nginx/nginx.conf has no 'log_format sidecars'"
    directive = parse_log_format_directive(match.group(1))
    assert directive.name == "sidecars"
    assert (directive.format, directive.escape) == (nginx_log.SIDECARS, "default")


def test_line_that_does_not_match_is_none() -> None:
    parser = PRESETS["combined"]
    assert parser.parse("") is None
    assert parser.parse("garbage") is None
    assert parser.parse(SIDECARS_LINE + " trailing") is None
    assert parser.parse('1.2.3.4 - - [bad time] "GET / HTTP/1.1" 200 1 "-" "-"') is None
    assert parser.parse('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /" abc 1 "-" "-"') is None


def test_braced_variable_and_adjacent_literal() -> None:
    parser = compile_log_format("${status}x ${request_time}s ${host}.log")
    assert parser.parse("404x 0.250s example.org.log") == {
        "status": "404",
        "request_time": "0.250",
        "host": "example.org",
    }


def test_variable_names_with_digits_and_repeats() -> None:
    parser = compile_log_format("$1 [$status] $1 $status")
    assert parser.fields == ("1", "status")
    assert parser.parse("abc [200] abc 200") == {"1": "abc", "status": "200"}


def test_values_with_spaces_in_unquoted_fields() -> None:
    parser = compile_log_format("$remote_user [$time_local] $request $status")
    fields = parser.parse("a b c [10/Oct/2000:13:55:36 -0700] GET /x y HTTP/1.1 301")
    assert fields == {
        "remote_user": "a b c",
        "time_local": "10/Oct/2000:13:55:36 -0700",
        "request": "GET /x y HTTP/1.1",
        "status": "301",
    }


def test_format_without_variables_matches_only_itself() -> None:
    parser = compile_log_format("hello")
    assert parser.parse("hello") == {}
    assert parser.parse("hello!") is None


def test_missing_marker_per_escape_mode() -> None:
    fmt = '$remote_addr "$http_referer" $upstream_response_time $status'
    assert compile_log_format(fmt).parse('1.2.3.4 "-" - 200') == {
        "remote_addr": "1.2.3.4",
        "http_referer": "-",
        "upstream_response_time": "-",
        "status": "200",
    }
    fields = compile_log_format(fmt, escape="json").parse('1.2.3.4 ""  200')
    assert fields == {
        "remote_addr": "1.2.3.4",
        "http_referer": "",
        "upstream_response_time": "",
        "status": "200",
    }


def test_upstream_lists_parse() -> None:
    parser = compile_log_format("$upstream_status $upstream_response_time end")
    fields = parser.parse("502, 200 : 404 0.001, - : 0.123 end")
    assert fields == {
        "upstream_status": "502, 200 : 404",
        "upstream_response_time": "0.001, - : 0.123",
    }


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("", "empty format"),
        ("$", "'$' without a variable name at column 1"),
        ("a $ b", "'$' without a variable name at column 3"),
        ("${}", "'$' without a variable name"),
        ("${status", "missing '}' after ${status at column 1"),
        ("${status x}", "missing '}'"),
        ("$-", "'$' without a variable name"),
    ],
)
def test_bad_formats_raise_one_line_naming_the_problem(fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        compile_log_format(fmt)
    assert "\n" not in str(info.value)


def test_bad_escape_is_rejected() -> None:
    with pytest.raises(ValueError, match="escape='xml' is not one of default, json, none"):
        compile_log_format("$status", escape="xml")


# --- unescaping -------------------------------------------------------------------------------


def test_default_escapes_are_undone_including_split_utf8() -> None:
    parser = compile_log_format('"$http_user_agent" "$request"')
    line = r'"q\x22u\x5Co\x01t\xC3\xA9\x7F\x09z" "GET /\xD0\xB0 HTTP/1.1"'
    assert parser.parse(line) == {
        "http_user_agent": 'q"u\\o\x01té\x7f\tz',
        "request": "GET /\u0430 HTTP/1.1",
    }


def test_default_invalid_utf8_escapes_become_replacement_chars() -> None:
    parser = compile_log_format('"$request"')
    assert parser.parse(r'"\x16\x03\xA5\x01"') == {"request": "\x16\x03\ufffd\x01"}


def test_json_escapes_are_undone() -> None:
    parser = compile_log_format('{"ua":"$http_user_agent","s":$status}', escape="json")
    fields = parser.parse(r'{"ua":"q\"u\\o\u0001t\tz\n\/\b\f\r\u001B\ud800\q","s":200}')
    assert fields == {"http_user_agent": 'q"u\\o\x01t\tz\n/\b\f\r\x1b\ufffd\\q', "status": "200"}


def test_json_format_value_with_escaped_quote_stays_inside_its_field() -> None:
    parser = compile_log_format('"$a" "$b"', escape="json")
    assert parser.parse(r'"x\" \"y" "z"') == {"a": 'x" "y', "b": "z"}


def test_escape_none_keeps_values_verbatim() -> None:
    parser = compile_log_format('"$a" $status', escape="none")
    assert parser.parse('"say "hi"" 200') == {"a": 'say "hi"', "status": "200"}


def test_hostile_long_line_fails_without_catastrophic_backtracking() -> None:
    # Several ambiguous (shortest-match) fields and a line that almost matches, 600 KB long:
    # quadratic backtracking would take minutes; exact fields are possessive and, past
    # LONG_LINE, ambiguous ones end at the first occurrence of the text after them.
    parser = compile_log_format('$a [$b] "$c" "$d" $status')
    line = "x [" * 200_000 + '] "' + "y" * 100 + '" "z" 20'
    assert parser.parse(line) is None
    assert PRESETS["sidecars"].parse('1 - [ "' * 100_000) is None
    assert PRESETS["combined"].parse("1 - a [" * 100_000) is None


def test_long_lines_parse_like_short_ones() -> None:
    parser = compile_log_format('$remote_user [$b] "$c" $status')
    user, b = "u" * nginx_log.LONG_LINE, "b" * 3000
    assert parser.parse(f'{user} [{b}] "c" 200') == {
        "remote_user": user,
        "b": b,
        "c": "c",
        "status": "200",
    }
    # The one difference: an ambiguous value holding the text after it ("a [b" before " [")
    # is found by backtracking on a short line, not on a long one.
    typed = compile_log_format('$remote_user [$time_local] "$request"')
    time_local = "24/Nov/2026:05:52:04 +0000"
    assert typed.parse(f'a [b [{time_local}] "GET /"') == {
        "remote_user": "a [b",
        "time_local": time_local,
        "request": "GET /",
    }
    assert typed.parse(f'a [b [{time_local}] "GET /{user}"') is None


# --- property: whatever nginx writes parses back to the values ----------------------------------

_value_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    escape=st.sampled_from(["default", "json"]),
    referer=_value_text,
    agent=_value_text,
    user=_value_text.filter(lambda v: " [" not in v),
    status=st.integers(100, 599),
    size=st.integers(0, 10**12),
    millis=st.integers(0, 10**7),
)
def test_property_rendered_lines_parse_back(
    escape: str, referer: str, agent: str, user: str, status: int, size: int, millis: int
) -> None:
    parser = compile_log_format(nginx_log.SIDECARS, escape=escape)
    seconds = f"{millis // 1000}.{millis % 1000:03d}"
    values = {
        "remote_addr": "2001:db8::1",
        "remote_user": user,
        "time_local": "01/Jan/2026:00:00:00 +0000",
        "request": "GET / HTTP/1.1",
        "status": str(status),
        "body_bytes_sent": str(size),
        "http_referer": referer,
        "http_user_agent": agent,
        "request_time": seconds,
        "upstream_response_time": f"{seconds}, -",
    }
    line = nginx_log.SIDECARS
    for name in sorted(values, key=len, reverse=True):
        line = line.replace("$" + name, nginx_escape(values[name], escape))
    assert parser.parse(line) == values


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_property_any_text_parses_or_is_none(line: str) -> None:
    for parser in PRESETS.values():
        fields = parser.parse(line)
        assert fields is None or all(isinstance(v, str) for v in fields.values())


# --- the json preset --------------------------------------------------------------------------


def test_json_preset_fields_as_strings() -> None:
    line = '{"status":200,"t":0.100,"big":1e400,"ok":true,"no":false,"n":null,"x":[1,{"y":2}]}'
    assert PRESETS["json"].parse(line) == {
        "status": "200",
        "t": "0.100",
        "big": "1e400",
        "ok": "true",
        "no": "false",
        "n": "",
        "x": '[1,{"y":2}]',
    }


@pytest.mark.parametrize(
    "line",
    ["", "not json", "[1,2]", '"text"', "123", '{"a":1', '{"a":1} {"b":2}', "[" * 100_000],
)
def test_json_preset_non_objects_are_none(line: str) -> None:
    assert PRESETS["json"].parse(line) is None


def test_json_preset_huge_integer_and_lone_surrogate_are_safe() -> None:
    fields = PRESETS["json"].parse('{"n":' + "9" * 50_000 + r',"s":"a\ud800b","\udc00":"k"}')
    assert fields is not None
    assert fields["n"] == "9" * 50_000
    assert fields["s"] == "a\ufffdb"
    assert fields["\ufffd"] == "k"
    "".join(fields).encode("utf-8")


# --- the directive and the setting value ------------------------------------------------------


def test_directive_parsing_joins_strings_and_reads_escape() -> None:
    text = """log_format  main  escape=json  '{"t":"$time_iso8601",'   # a comment
        "\\"s\\":$status}" ;  # trailing comment"""
    directive = parse_log_format_directive(text)
    assert directive.name == "main"
    assert directive.escape == "json"
    assert directive.format == '{"t":"$time_iso8601","s":$status}'


def test_directive_bare_words_and_escapes() -> None:
    directive = parse_log_format_directive(r"log_format x $status\t'q' 'a\'b\\c'")
    # As in nginx, quotes inside a bare word are literal.
    assert directive.format == "$status\t'q'a'b\\c"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log_format", "expected a name and at least one format string"),
        ("log_format x", "expected a name and at least one format string"),
        ("log_format x escape=json;", "no format string after escape="),
        ("log_format x escape=yaml '$a';", "escape='yaml' is not one of"),
        ("log_format x '$a", "unterminated ' string"),
        ("log_format x '$a'; access_log off;", "text after the terminating ';'"),
        ("access_log x;", "expected text starting with 'log_format'"),
    ],
)
def test_bad_directives(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_log_format_directive(text)


def test_load_log_format_accepts_preset_directive_or_format() -> None:
    assert load_log_format(" combined ") is PRESETS["combined"]
    parser = load_log_format("log_format j escape=json '\"$status\"';")
    assert (parser.escape, parser.fields) == ("json", ("status",))
    assert load_log_format("$status $request_time").parse("200 0.001") == {
        "status": "200",
        "request_time": "0.001",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("combind", "'combind' is neither a preset (combined, json, sidecars)"),
        ("", "neither a preset"),
        ("$status ${x", "missing '}'"),
        ("log_format x", "expected a name"),
    ],
)
def test_load_log_format_bad_values(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_log_format(value)


# --- time -------------------------------------------------------------------------------------


def test_parse_time_local_applies_offset() -> None:
    expected = datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC).timestamp()
    assert parse_time_local("10/Oct/2000:13:55:36 -0700") == int(expected) * 10**9
    assert parse_time_local("10/Oct/2000:22:25:36 +0130") == int(expected) * 10**9


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10/Foo/2000:13:55:36 -0700",
        "31/Feb/2000:13:55:36 -0700",
        "10/Oct/2000:25:55:36 -0700",
        "10/Oct/2000:13:55:36",
        "10/Oct/2000 13:55:36 -0700",
    ],
)
def test_parse_time_local_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not an nginx \\$time_local"):
        parse_time_local(text)


def test_parse_time_iso8601_and_msec() -> None:
    assert parse_time_iso8601("2000-10-10T13:55:36-07:00") == 971211336 * 10**9
    assert parse_time_iso8601("2000-10-10T20:55:36Z") == 971211336 * 10**9
    assert parse_msec("1795499519.401") == 1795499519_401_000_000
    assert parse_msec("12") == 12 * 10**9
    with pytest.raises(ValueError, match="without a UTC offset"):
        parse_time_iso8601("2000-10-10T13:55:36")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time_iso8601("yesterday")
    with pytest.raises(ValueError, match="not an nginx \\$msec"):
        parse_msec("1.2.3")


def test_timestamp_prefers_most_precise_and_skips_bad_values() -> None:
    assert timestamp_ns(None) is None
    assert timestamp_ns({"status": "200"}) is None
    local = "10/Oct/2000:13:55:36 -0700"
    assert timestamp_ns({"time_local": local}) == 971211336 * 10**9
    assert timestamp_ns({"time_local": local, "msec": "971211336.250"}) == 971211336_250_000_000
    assert timestamp_ns({"msec": "garbage", "time_local": local}) == 971211336 * 10**9
    assert timestamp_ns({"@timestamp": "2000-10-10T20:55:36+00:00"}) == 971211336 * 10**9


# --- typed helpers ----------------------------------------------------------------------------


def test_typed_helpers_on_a_parsed_line() -> None:
    fields = PRESETS["sidecars"].parse(SIDECARS_LINE)
    assert fields is not None
    assert nginx_log.status(fields) == 200
    assert nginx_log.method(fields) == "GET"
    assert nginx_log.request_time(fields) == pytest.approx(0.012)
    assert nginx_log.upstream_response_times(fields) == [0.004, 0.008]
    assert nginx_log.upstream_response_time(fields) == pytest.approx(0.012)
    assert nginx_log.body_bytes_sent(fields) == 612


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"status": "-", "request": "-", "request_time": "-", "body_bytes_sent": "-"},
        {"status": "2000", "request": "", "request_time": "1e3", "body_bytes_sent": "-1"},
        {"status": "abc", "request_time": "nan", "body_bytes_sent": "١٢"},
    ],
)
def test_typed_helpers_on_missing_or_malformed_values(fields: dict[str, str]) -> None:
    assert nginx_log.status(fields) is None
    assert nginx_log.method(fields) is None
    assert nginx_log.request_time(fields) is None
    assert nginx_log.body_bytes_sent(fields) is None
    assert nginx_log.upstream_response_time(fields) is None


def test_method_prefers_request_method_and_keeps_garbage_for_the_caller() -> None:
    assert nginx_log.method({"request_method": "PURGE", "request": "GET / HTTP/1.1"}) == "PURGE"
    assert nginx_log.method({"request": "\x16\x03\x01"}) == "\x16\x03\x01"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("-", []), ("", []), ("0.100", [0.1]), ("-, 0.200 : 0.300", [0.2, 0.3]), ("x, 1.5", [1.5])],
)
def test_upstream_response_times(text: str, expected: list[float]) -> None:
    assert nginx_log.upstream_response_times({"upstream_response_time": text}) == expected
