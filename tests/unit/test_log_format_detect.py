"""Format detection from a file's first lines, and the log_format compiler on generated formats
(pure, with bounded hypothesis property tests)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.formats import LineFormats
from sidecars.runtime import log_format_detect as detect
from sidecars.runtime import nginx_log
from sidecars.runtime.nginx_log import PRESETS, Literal, compile_log_format, tokenize_format
from tests.unit.test_nginx_log import SIDECARS_LINE, nginx_escape

COMBINED_LINE = (
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
    '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
)
JSON_LINE = '{"time":"2026-12-01T08:00:00+00:00","status":"404","request":"GET /x HTTP/1.1"}'
ERROR_LINE = "2026/12/01 08:00:00 [notice] 12#12: using the \"epoll\" event method"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (SIDECARS_LINE, "sidecars"),
        (COMBINED_LINE, "combined"),
        (JSON_LINE, "json"),
        (ERROR_LINE, detect.ERROR_LOG),
        ("a line of some custom format", None),
        ("", None),
    ],
)
def test_detect_line(line: str, expected: str | None) -> None:
    assert detect.detect_line(line) == expected


def test_the_presets_exclude_each_other() -> None:
    for line, name in ((SIDECARS_LINE, "sidecars"), (COMBINED_LINE, "combined")):
        others = [n for n in detect.CANDIDATES if n != name]
        assert all(PRESETS[other].parse(line) is None for other in others), name


def test_detection_settles_on_the_first_known_line_or_gives_up() -> None:
    found = detect.Detection()
    assert not found.feed(["garbage"] * 3) and not found.settled
    assert found.feed(["more garbage", COMBINED_LINE])
    assert (found.format, found.parser) == ("combined", PRESETS["combined"])
    assert not found.feed([SIDECARS_LINE])  # settled: fixed for the file
    assert found.format == "combined"

    none = detect.Detection()
    assert not none.feed(["custom"] * (detect.SAMPLE_LINES - 1))
    assert none.feed(["custom", COMBINED_LINE])  # the 21st line is not looked at
    assert none.gave_up and none.parser is None and none.first_line == "custom"


def test_sample_is_cut() -> None:
    assert detect.sample("x" * 10) == "x" * 10
    assert detect.sample("x" * 1000) == "x" * detect.SAMPLE_CHARS + "..."


# --- the log-shipper's per-file formats ----------------------------------------------------------


def test_shipper_auto_detects_per_file_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    formats = LineFormats(detect.AUTO)
    caplog.set_level(logging.INFO)
    fields, unparsed = formats.parse("fp-access", "/logs/access.log", [COMBINED_LINE, "oops"])
    assert fields is not None and fields[0]["status"] == "200" and fields[1] is None
    assert unparsed == 1
    fields, unparsed = formats.parse("fp-error", "/logs/error.log", [ERROR_LINE])
    assert fields == [None] and unparsed == 0  # an error log is raw by nature
    formats.parse("fp-access", "/logs/access.log", ["oops again"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per file"
    logged = warnings[0].fields  # type: ignore[attr-defined]
    assert logged["sample"] == "oops" and "LOG_SHIPPER_LOG_FORMAT" in logged["fix"]

    custom = [f"custom line {i}" for i in range(detect.SAMPLE_LINES)]
    fields, unparsed = formats.parse("fp-custom", "/logs/custom.log", custom)
    assert fields == [None] * len(custom) and unparsed == len(custom)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


def test_shipper_fixed_and_no_format() -> None:
    assert LineFormats(None).parse("fp", "/p", [COMBINED_LINE]) == (None, 0)
    fields, unparsed = LineFormats(PRESETS["sidecars"]).parse("fp", "/p", [COMBINED_LINE])
    assert fields == [None] and unparsed == 1


# --- properties --------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_token = st.text(alphabet="abcdefABCDEF0123456789.:", min_size=1, max_size=20)
_seconds = st.integers(0, 10**6).map(lambda ms: f"{ms // 1000}.{ms % 1000:03d}")
_time_local = st.builds(
    lambda d, m, y, h, mi, s, off: f"{d:02d}/{m}/{y}:{h:02d}:{mi:02d}:{s:02d} {off}",
    st.integers(1, 28),
    st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Dec"]),
    st.integers(1970, 2100),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["+0000", "-0700", "+0530"]),
)


@st.composite
def _request(draw: st.DrawFn) -> dict[str, str]:
    return {
        "remote_addr": draw(_token),
        "remote_user": draw(_text.filter(lambda v: " [" not in v)),
        "time_local": draw(_time_local),
        "request": draw(_text),
        "status": str(draw(st.integers(100, 599))),
        "body_bytes_sent": str(draw(st.integers(0, 10**12))),
        "http_referer": draw(_text),
        "http_user_agent": draw(_text),
        "request_time": draw(_seconds),
        "upstream_response_time": draw(_seconds),
    }


def _render(fmt: str, values: dict[str, str], escape: str) -> str:
    """What nginx writes for ``fmt`` (variables replaced by their escaped values)."""
    return "".join(
        part.text if isinstance(part, Literal) else nginx_escape(values[part.name], escape)
        for part in tokenize_format(fmt)
    )


def _render_json(values: dict[str, str]) -> str:
    # What `log_format j escape=json '{"status":"$status",...}'` writes.
    return "{" + ",".join(f'"{k}":"{nginx_escape(v, "json")}"' for k, v in values.items()) + "}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["sidecars", "combined", "json"]),
    requests=st.lists(_request(), min_size=1, max_size=4),
    noise=st.integers(0, 3),
)
def test_property_detection_names_the_format_lines_were_written_in(
    kind: str, requests: list[dict[str, str]], noise: int
) -> None:
    if kind == "json":
        lines = [_render_json(values) for values in requests]
    else:
        fmt = nginx_log.SIDECARS if kind == "sidecars" else nginx_log.COMBINED
        lines = [_render(fmt, values, "default") for values in requests]
    # A few lines of nothing known before them (a half-written first line, a banner).
    found = detect.Detection()
    found.feed(["-"] * noise)
    found.feed(lines)
    assert found.format == kind
    assert all(found.parser.parse(line) is not None for line in lines)  # type: ignore[union-attr]


# Generated log_format strings: typed variables, quoted free-text ones, and literal separators.
_TYPED = {
    "status": st.integers(100, 599).map(str),
    "body_bytes_sent": st.integers(0, 10**9).map(str),
    "request_time": _seconds,
    "msec": st.integers(0, 2 * 10**12).map(lambda ms: f"{ms // 1000}.{ms % 1000:03d}"),
    "time_local": _time_local,
    "remote_addr": _token,
    "request_method": st.sampled_from(["GET", "POST", "PURGE"]),
}
_FREE = ["request", "http_referer", "http_user_agent", "http_x_trace", "cookie_session"]
_SEPARATORS = [" ", " - ", " | ", ", ", "\t", " :: "]


@st.composite
def _format_and_values(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    escape = draw(st.sampled_from(["default", "json"]))
    names = draw(
        st.lists(st.sampled_from([*_TYPED, *_FREE]), min_size=1, max_size=7, unique=True)
    )
    pieces: list[str] = []
    values: dict[str, str] = {}
    for index, name in enumerate(names):
        if index:
            pieces.append(draw(st.sampled_from(_SEPARATORS)))
        bracket = name == "time_local" and draw(st.booleans())
        variable = draw(st.sampled_from([f"${name}", f"${{{name}}}"]))
        if name in _FREE:
            pieces.append(f'"{variable}"')  # a free value is exact between quotes
            values[name] = draw(_text)
        else:
            pieces.append(f"[{variable}]" if bracket else variable)
            values[name] = draw(_TYPED[name])
    prefix = draw(st.sampled_from(["", "app=", "[x] "]))
    return escape, prefix + "".join(pieces), values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_format_and_values())
def test_property_generated_log_formats_parse_back_what_they_render(
    case: tuple[str, str, dict[str, str]],
) -> None:
    escape, fmt, values = case
    parser = compile_log_format(fmt, escape=escape)
    line = _render(fmt, values, escape)
    assert parser.parse(line) == values, (fmt, line)
    # The whole directive as written in nginx.conf gives the same parser.
    directive = f"log_format gen escape={escape} {json.dumps(fmt)};"
    assert nginx_log.load_log_format(directive).parse(line) == values
