"""Counting access-log lines: labels, folding, histograms."""

from __future__ import annotations

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.exposition import Family
from sidecars.runtime.nginx_log import PRESETS

PARSE = PRESETS["sidecars"].parse


def line(method: str, status: int, request_time: str = "0.004", upstream: str = "-") -> str:
    return (
        f'10.0.0.1 - - [24/Nov/2026:06:00:00 +0000] "{method} /p?q=1 HTTP/1.1" {status} 12 '
        f'"-" "curl/8" {request_time} "{upstream}"'
    )


def metrics(status_label: str = "code") -> AccessLogMetrics:
    return AccessLogMetrics(
        status_label=status_label,
        duration_buckets=(0.005, 0.1, 1.0),
        upstream_buckets=(0.01, 0.1),
    )


def samples(family: Family) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for s in family.samples}


def families(m: AccessLogMetrics) -> dict[str, Family]:
    return {f.name: f for f in m.families()}


def test_counts_by_status_and_method() -> None:
    m = metrics()
    for _ in range(3):
        assert m.observe(PARSE(line("GET", 200)))
    m.observe(PARSE(line("POST", 404)))
    m.observe(PARSE(line("BREW", 418)))  # unknown method: folded
    m.observe(PARSE(line("get", 200)))  # not a valid method token: folded
    responses = samples(families(m)["nginx_http_responses_total"])
    assert responses == {
        ("nginx_http_responses_total", (("status", "200"), ("method", "GET"))): 3.0,
        ("nginx_http_responses_total", (("status", "200"), ("method", "other"))): 1.0,
        ("nginx_http_responses_total", (("status", "404"), ("method", "POST"))): 1.0,
        ("nginx_http_responses_total", (("status", "418"), ("method", "other"))): 1.0,
    }
    body = samples(families(m)["nginx_http_response_body_bytes_total"])
    assert (
        body[("nginx_http_response_body_bytes_total", (("status", "200"), ("method", "GET")))] == 36
    )


def test_status_class_mode() -> None:
    m = metrics("class")
    for status in (200, 204, 301, 404, 500, 503):
        m.observe(PARSE(line("GET", status)))
    responses = samples(families(m)["nginx_http_responses_total"])
    by_status = {dict(labels)["status"]: v for (_, labels), v in responses.items()}
    assert by_status == {"2xx": 2, "3xx": 1, "4xx": 1, "5xx": 2}


def test_unparsed_lines_are_counted_not_lost() -> None:
    m = metrics()
    assert not m.observe(PARSE("garbage that matches no format"))
    assert not m.observe(None)
    assert not m.observe({"request": "GET / HTTP/1.1"})  # parsed, but no status
    lines = samples(families(m)["metrics_proxy_access_log_lines_total"])
    assert lines == {
        ("metrics_proxy_access_log_lines_total", (("result", "counted"),)): 0,
        ("metrics_proxy_access_log_lines_total", (("result", "unparsed"),)): 3,
    }
    assert families(m)["nginx_http_responses_total"].samples == ()


def test_duration_histogram_is_cumulative_with_inclusive_bounds() -> None:
    m = metrics()
    for seconds in ("0.001", "0.005", "0.050", "0.100", "2.000"):
        m.observe(PARSE(line("GET", 200, request_time=seconds)))
    hist = samples(families(m)["nginx_http_request_duration_seconds"])
    name = "nginx_http_request_duration_seconds"
    assert hist[(name + "_bucket", (("le", "0.005"),))] == 2  # 0.005 itself is "le 0.005"
    assert hist[(name + "_bucket", (("le", "0.1"),))] == 4
    assert hist[(name + "_bucket", (("le", "1.0"),))] == 4
    assert hist[(name + "_bucket", (("le", "+Inf"),))] == 5
    assert hist[(name + "_count", ())] == 5
    assert abs(hist[(name + "_sum", ())] - 2.156) < 1e-9


def test_upstream_time_sums_servers_and_skips_requests_without_upstream() -> None:
    m = metrics()
    m.observe(PARSE(line("GET", 200, upstream="0.004, 0.050")))
    m.observe(PARSE(line("GET", 502, upstream="-")))
    hist = samples(families(m)["nginx_http_upstream_response_duration_seconds"])
    name = "nginx_http_upstream_response_duration_seconds"
    assert hist[(name + "_count", ())] == 1
    assert hist[(name + "_bucket", (("le", "0.01"),))] == 0
    assert hist[(name + "_bucket", (("le", "0.1"),))] == 1


def test_cardinality_is_bounded_whatever_the_traffic() -> None:
    m = metrics()
    for i in range(5000):
        method = f"M{i}"
        status = 100 + i % 600  # includes codes outside 100-599
        m.observe(PARSE(line(method, status).replace("/p?q=1", f"/path/{i}")))
    series = families(m)["nginx_http_responses_total"].samples
    assert len(series) <= 501  # one method value ("other") x 500 codes + "other"
    assert {dict(s.labels)["method"] for s in series} == {"other"}


def test_a_format_without_timings_exposes_no_empty_histograms() -> None:
    combined = PRESETS["combined"]
    m = AccessLogMetrics(duration_buckets=(1.0,), upstream_buckets=(1.0,), logged=combined.fields)
    m.observe(combined.parse(line("GET", 200).rsplit(" ", 2)[0]))
    assert set(families(m)) == {
        "metrics_proxy_access_log_lines_total",
        "nginx_http_responses_total",
        "nginx_http_response_body_bytes_total",
    }
    assert samples(families(m)["nginx_http_responses_total"]) == {
        ("nginx_http_responses_total", (("status", "200"), ("method", "GET"))): 1.0
    }
