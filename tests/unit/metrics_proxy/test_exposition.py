"""Rendering in both formats, checked by prometheus_client's own (strict) parsers."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sidecars.metrics_proxy.collector import stub_status_families
from sidecars.metrics_proxy.exposition import (
    Family,
    Format,
    Sample,
    add_labels,
    format_value,
    negotiate,
    render,
)
from sidecars.metrics_proxy.stub_status import StubStatus

STATUS = StubStatus(active=3, accepted=10, handled=9, requests=42, reading=1, writing=1, waiting=1)

# What Debian's prometheus-nginx-exporter 0.11 serves, byte for byte, for the same reading.
EXPORTER_TEXT = """\
# HELP nginx_connections_accepted Accepted client connections
# TYPE nginx_connections_accepted counter
nginx_connections_accepted 10
# HELP nginx_connections_active Active client connections
# TYPE nginx_connections_active gauge
nginx_connections_active 3
# HELP nginx_connections_handled Handled client connections
# TYPE nginx_connections_handled counter
nginx_connections_handled 9
# HELP nginx_connections_reading Connections where NGINX is reading the request header
# TYPE nginx_connections_reading gauge
nginx_connections_reading 1
# HELP nginx_connections_waiting Idle client connections
# TYPE nginx_connections_waiting gauge
nginx_connections_waiting 1
# HELP nginx_connections_writing Connections where NGINX is writing the response back to the client
# TYPE nginx_connections_writing gauge
nginx_connections_writing 1
# HELP nginx_http_requests_total Total http requests
# TYPE nginx_http_requests_total counter
nginx_http_requests_total 42
# HELP nginx_up Status of the last metric scrape
# TYPE nginx_up gauge
nginx_up 1
"""


def test_stub_status_text_is_the_exporters() -> None:
    assert render(stub_status_families(STATUS), Format.TEXT).decode() == EXPORTER_TEXT


def test_nginx_down_is_up_zero_and_nothing_else() -> None:
    text = render(stub_status_families(None), Format.TEXT).decode()
    assert text == (
        "# HELP nginx_up Status of the last metric scrape\n# TYPE nginx_up gauge\nnginx_up 0\n"
    )


def test_openmetrics_keeps_series_names_and_parses_strictly() -> None:
    body = render(stub_status_families(STATUS), Format.OPENMETRICS).decode()
    assert body.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(body)}
    # Counters without _total cannot be OpenMetrics counters without renaming their series;
    # they are exposed as unknown under the exporter's exact names.
    assert families["nginx_connections_accepted"].type == "unknown"
    assert families["nginx_connections_accepted"].samples[0].name == "nginx_connections_accepted"
    assert families["nginx_http_requests"].type == "counter"
    assert families["nginx_http_requests"].samples[0].name == "nginx_http_requests_total"
    assert families["nginx_up"].samples[0].value == 1


def _histogram() -> Family:
    samples = (
        Sample("req_seconds_bucket", (("le", "0.1"),), 2.0),
        Sample("req_seconds_bucket", (("le", "+Inf"),), 3.0),
        Sample("req_seconds_sum", (), 0.75),
        Sample("req_seconds_count", (), 3.0),
        Sample("req_seconds_created", (), 1700000000.0),
    )
    return Family("req_seconds", "histogram", "Request time", samples)


def test_histogram_and_created_samples_per_format() -> None:
    families = [_histogram()]
    text = render(families, Format.TEXT).decode()
    assert "req_seconds_created" not in text  # would be stored as a series of its own
    [parsed] = parse_text(text)
    assert [s.name for s in parsed.samples] == [
        "req_seconds_bucket",
        "req_seconds_bucket",
        "req_seconds_sum",
        "req_seconds_count",
    ]
    om = render(families, Format.OPENMETRICS).decode()
    [parsed_om] = parse_openmetrics(om)
    assert parsed_om.type == "histogram"
    assert "req_seconds_created" in om


def test_escaping_of_label_values_and_help() -> None:
    family = Family(
        "weird",
        "gauge",
        'help with \\ backslash, "quotes" and\nnewline',
        (Sample("weird", (("path", 'a"b\\c\nd'),), 1.5),),
    )
    for fmt, parse in ((Format.TEXT, parse_text), (Format.OPENMETRICS, parse_openmetrics)):
        [parsed] = parse(render([family], fmt).decode())
        assert parsed.documentation == family.help
        assert parsed.samples[0].labels == {"path": 'a"b\\c\nd'}
        assert parsed.samples[0].value == 1.5


def test_timestamps_ms_in_text_seconds_in_openmetrics() -> None:
    family = Family("t", "gauge", "", (Sample("t", (), 1.0, 1700000000.5),))
    assert render([family], Format.TEXT).decode().splitlines()[-1] == "t 1 1700000000500"
    assert "t 1 1700000000.5" in render([family], Format.OPENMETRICS).decode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.25, "0.25"),
        (-3.0, "-3"),
        (2.0**60, repr(2.0**60)),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        # Prometheus 2.x's scrape Accept header
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            Format.OPENMETRICS,
        ),
        ("text/plain;version=0.0.4", Format.TEXT),
        ("", Format.TEXT),
        ("*/*", Format.TEXT),
        ("application/json", Format.TEXT),
        ("application/openmetrics-text", Format.OPENMETRICS),
        ("application/openmetrics-text;version=2.0.0", Format.TEXT),
        ("text/plain;q=0.9,application/openmetrics-text;q=0.5", Format.TEXT),
        ("application/openmetrics-text;q=0", Format.TEXT),
        ("application/openmetrics-text;q=bogus", Format.TEXT),
    ],
)
def test_negotiation(accept: str, expected: Format) -> None:
    assert negotiate(accept) is expected


def test_add_labels_keeps_a_clashing_own_label_as_exported() -> None:
    family = Family("m", "gauge", "", (Sample("m", (("pod", "inner"), ("x", "1")), 1.0),))
    labelled = add_labels(family, (("pod", "web-0"), ("namespace", "shop")))
    assert labelled.samples[0].labels == (
        ("exported_pod", "inner"),
        ("x", "1"),
        ("pod", "web-0"),
        ("namespace", "shop"),
    )


def test_unsupported_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported type 'gaugehistogram'"):
        Family("g", "gaugehistogram", "", ())
