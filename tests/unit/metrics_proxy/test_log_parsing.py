"""The metrics-proxy's access-log parsing: detected or fixed format, families served, the
one warning (pure)."""

from __future__ import annotations

import logging

import pytest

from sidecars.metrics_proxy.access_log import (
    BODY_BYTES,
    DURATION,
    LINES,
    RESPONSES,
    AccessLogMetrics,
)
from sidecars.metrics_proxy.log_parsing import AccessLogParsing
from tests.unit.test_log_format_detect import COMBINED_LINE
from tests.unit.test_nginx_log import SIDECARS_LINE


def _metrics() -> AccessLogMetrics:
    return AccessLogMetrics(duration_buckets=(0.1, 1.0), upstream_buckets=(0.1, 1.0))


def names(access: AccessLogMetrics) -> set[str]:
    return {family.name for family in access.families()}


def test_auto_serves_the_common_families_until_detected_then_the_formats() -> None:
    access = _metrics()
    parsing = AccessLogParsing("auto", access)
    assert names(access) == {LINES, RESPONSES}
    parsing.feed([COMBINED_LINE, COMBINED_LINE])
    assert access.parsed == 2 and access.unparsed == 0
    assert BODY_BYTES in names(access) and DURATION not in names(access)

    access = _metrics()
    AccessLogParsing("auto", access).feed([SIDECARS_LINE])
    assert access.parsed == 1 and DURATION in names(access)


def test_unparsed_lines_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    access = _metrics()
    parsing = AccessLogParsing("combined", access)
    parsing.feed(["junk 1", COMBINED_LINE, "junk 2"])
    parsing.feed(["junk 3"])
    assert (access.parsed, access.unparsed) == (1, 3)
    (warning,) = caplog.records
    assert warning.fields["sample"] == "junk 1"  # type: ignore[attr-defined]
    assert "METRICS_PROXY_LOG_FORMAT" in warning.fields["fix"]  # type: ignore[attr-defined]


def test_auto_gives_up_on_an_unknown_format_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    access = _metrics()
    parsing = AccessLogParsing("auto", access)
    parsing.feed([f"custom {i}" for i in range(25)])
    parsing.feed([COMBINED_LINE])  # too late: the first lines decided
    assert (access.parsed, access.unparsed) == (0, 26)
    assert len(caplog.records) == 1


# --- the one-pass scan against the per-line parser -------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.unit.log_shipper.test_chunk_fields import PARSERS, line_for  # noqa: E402


@st.composite
def _chunks(draw: st.DrawFn) -> tuple[object, list[list[str]]]:
    parser = draw(st.sampled_from(PARSERS))
    return parser, draw(st.lists(st.lists(line_for(parser), max_size=8), min_size=1, max_size=3))


def _counted(parser: object, chunks: list[list[str]], scan: bool) -> tuple[object, ...]:
    access = _metrics()
    parsing = AccessLogParsing("combined", access)
    parsing._use(parser)  # type: ignore[arg-type]
    if not scan:
        parsing._scan = None  # the per-line path, as before the scan
    for texts in chunks:
        parsing.feed(texts)
    rendered = [(f.name, f.samples) for f in access.families()]
    return access.parsed, access.unparsed, rendered


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_chunks())
def test_property_the_scan_counts_what_the_per_line_parser_counts(
    case: tuple[object, list[list[str]]],
) -> None:
    parser, chunks = case
    assert _counted(parser, chunks, scan=True) == _counted(parser, chunks, scan=False)


def test_the_scan_is_used_for_the_presets_and_warns_like_the_per_line_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    access = _metrics()
    parsing = AccessLogParsing("sidecars", access)
    assert parsing._scan is not None
    no_status = SIDECARS_LINE.replace(" 200 ", " - ", 1)
    parsing.feed([SIDECARS_LINE, no_status, SIDECARS_LINE])
    assert (access.parsed, access.unparsed) == (2, 1)
    (warning,) = caplog.records
    assert warning.fields["sample"] == no_status  # type: ignore[attr-defined]
