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
