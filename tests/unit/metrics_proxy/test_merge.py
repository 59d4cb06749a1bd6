"""Upstream exposition parsing, renaming and merging with our own families."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from sidecars.metrics_proxy.collector import stub_status_families
from sidecars.metrics_proxy.exposition import Family, Format, Sample, render
from sidecars.metrics_proxy.merge import ExpositionError, merge, parse_exposition

TEXT = "text/plain; version=0.0.4"
OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"

APP_TEXT = b"""\
# HELP jobs_processed Jobs done (a counter without _total, as older clients write)
# TYPE jobs_processed counter
jobs_processed{queue="a"} 3
jobs_processed{queue="b"} 4
# HELP http_requests_total Requests
# TYPE http_requests_total counter
http_requests_total{code="200"} 10
# TYPE temperature gauge
temperature 21.5
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
untyped_thing 7
"""


def _by_name(families: list[Family]) -> dict[str, Family]:
    return {f.name: f for f in families}


def test_text_keeps_every_series_name() -> None:
    families = _by_name(parse_exposition(APP_TEXT, TEXT).families)
    assert [s.name for s in families["jobs_processed"].samples] == ["jobs_processed"] * 2
    assert families["jobs_processed"].type == "counter"
    assert families["http_requests_total"].samples[0].name == "http_requests_total"
    assert families["temperature"].type == "gauge"
    assert families["latency_seconds"].type == "histogram"
    assert families["untyped_thing"].type == "untyped"
    assert families["jobs_processed"].samples[1].labels == (("queue", "b"),)


def test_openmetrics_upstream() -> None:
    body = b"""\
# TYPE build info
build_info{version="1.2"} 1
# TYPE jobs counter
jobs_total 5
jobs_created 1700000000
# TYPE depth gaugehistogram
depth_bucket{le="+Inf"} 1
depth_gcount 1
depth_gsum 1
# EOF
"""
    parsed = parse_exposition(body, OM)
    families = _by_name(parsed.families)
    assert families["build_info"].type == "gauge"
    assert families["jobs_total"].type == "counter"
    assert parsed.unsupported == 3  # the gauge histogram's series
    text = render(parsed.families, Format.TEXT).decode()
    assert "jobs_total 5" in text and "jobs_created" not in text


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"<html><body>oops</body></html>\n", TEXT, "invalid text exposition"),
        (b'{"metrics": [1, 2]}\n', TEXT, "invalid text exposition"),
        (b"metric_a 1\nmetric_b", TEXT, "does not end with a newline"),
        (b"metric_a 1\nmetric_b{le=\n", TEXT, "invalid text exposition"),
        (b"metric_a one\n", TEXT, "invalid text exposition"),
        (b"\xff\xfe\x00garbage\n", TEXT, "not UTF-8"),
        (b"# TYPE a gauge\na 1\n", OM, "invalid OpenMetrics exposition"),  # no # EOF
        (b'bad-name{x="1"} 1\n', TEXT, "invalid"),
        (b'ok{__reserved="1"} 1\n', TEXT, "Invalid labels"),
    ],
    ids=[
        "html",
        "json",
        "cut-at-line",
        "cut-in-labels",
        "bad-value",
        "binary",
        "om-without-eof",
        "bad-metric-name",
        "reserved-label",
    ],
)
def test_invalid_exposition_is_rejected_whole(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(ExpositionError, match=message) as info:
        parse_exposition(body, content_type)
    assert "\n" not in str(info.value)


def test_empty_body_is_no_families() -> None:
    assert parse_exposition(b"", TEXT).families == []


def test_prefix_and_label() -> None:
    families = parse_exposition(
        APP_TEXT, TEXT, prefix="app_", labels=(("upstream", "shop"),)
    ).families
    named = _by_name(families)
    histogram = named["app_latency_seconds"]
    assert {s.name for s in histogram.samples} == {
        "app_latency_seconds_bucket",
        "app_latency_seconds_sum",
        "app_latency_seconds_count",
    }
    assert all(("upstream", "shop") in s.labels for s in histogram.samples)


def _gauge(name: str, *series: tuple[tuple[tuple[str, str], ...], float]) -> Family:
    return Family(name, "gauge", "", tuple(Sample(name, labels, v) for labels, v in series))


def test_our_own_names_win() -> None:
    own = stub_status_families(None)  # nginx_up
    upstream = [_gauge("nginx_up", ((), 1.0)), _gauge("app_ok", ((), 1.0))]
    merged = merge(own, [("app", upstream)])
    assert [f.name for f in merged.families] == ["nginx_up", "app_ok"]
    assert merged.families[0].samples[0].value == 0.0
    assert merged.dropped == {("app", "name_collision"): 1}


def test_same_family_from_two_upstreams_is_merged_and_duplicates_dropped() -> None:
    a = [_gauge("queue_depth", ((("q", "1"),), 1.0), ((("q", "2"),), 2.0))]
    b = [_gauge("queue_depth", ((("q", "2"),), 20.0), ((("q", "3"),), 3.0))]
    merged = merge([], [("a", a), ("b", b)])
    [family] = merged.families
    assert [(s.labels, s.value) for s in family.samples] == [
        ((("q", "1"),), 1.0),
        ((("q", "2"),), 2.0),
        ((("q", "3"),), 3.0),
    ]
    assert merged.dropped == {("b", "duplicate_series"): 1}


def test_duplicate_series_within_one_body() -> None:
    parsed = parse_exposition(b"dup 1\ndup 2\n", TEXT)
    merged = merge([], [("a", parsed.families)])
    assert [s.value for s in merged.families[0].samples] == [1.0]
    assert merged.dropped == {("a", "duplicate_series"): 1}


def test_colliding_names_of_different_types() -> None:
    histogram = parse_exposition(
        b'# TYPE rt histogram\nrt_bucket{le="+Inf"} 1\nrt_sum 1\nrt_count 1\n', TEXT
    ).families
    gauge_on_suffix = [_gauge("rt_count", ((), 5.0))]
    counter = parse_exposition(b"# TYPE rt counter\nrt 1\n", TEXT).families
    merged = merge([], [("a", histogram), ("b", gauge_on_suffix), ("c", counter)])
    assert [f.name for f in merged.families] == ["rt"]
    assert merged.families[0].type == "histogram"
    assert merged.dropped == {("b", "name_collision"): 1, ("c", "name_collision"): 1}


def test_merged_output_parses_strictly_as_openmetrics() -> None:
    own = stub_status_families(None)
    upstream = parse_exposition(APP_TEXT, TEXT, labels=(("upstream", "a"),)).families
    merged = merge(own, [("a", upstream)])
    body = render(merged.families, Format.OPENMETRICS).decode()
    names = [f.name for f in parse_openmetrics(body)]
    assert len(names) == len(set(names))
