"""Upstream /metrics merged in: renamed, collisions and duplicates left out and counted, a body
that does not parse dropped whole, the format negotiated with the scraper."""

from __future__ import annotations

import base64
import gzip
import threading
from collections.abc import Callable

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from tests.integration.metrics_proxy import fake_upstream as fake
from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.fake_upstream import FakeUpstream
from tests.integration.metrics_proxy.proxy import Proxy, Series, parse_samples
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

APP = """\
# HELP jobs_processed Jobs done
# TYPE jobs_processed counter
jobs_processed{queue="a"} 3
# HELP queue_depth Jobs waiting
# TYPE queue_depth gauge
queue_depth{queue="a"} 5
queue_depth{queue="a"} 6
# TYPE nginx_up gauge
nginx_up 42
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
"""


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def dropped(series: Series, upstream: str, reason: str, **const: str) -> float:
    return series.get(
        key("metrics_proxy_dropped_series_total", upstream=upstream, reason=reason, **const), 0.0
    )


def test_merge_with_prefix_label_collisions_and_recovery(
    nginx: Site, proxies: Callable[..., Proxy]
) -> None:
    (nginx.html / "exposition" / "app.txt").write_text(APP)
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "shop=" + nginx.url("/exposition/app.txt"),
        "--merge-prefix",
        "app_",
        "--merge-label",
        "upstream",
        "--const-labels",
        "pod=web-0",
    ).wait_ready()
    series = proxy.scrape()
    assert series[key("app_jobs_processed", queue="a", upstream="shop", pod="web-0")] == 3
    assert series[key("app_queue_depth", queue="a", upstream="shop", pod="web-0")] == 5
    assert series[key("app_nginx_up", upstream="shop", pod="web-0")] == 42  # prefixed: no clash
    assert series[key("nginx_up", pod="web-0")] == 1  # ours
    assert series[key("app_latency_seconds_count", upstream="shop", pod="web-0")] == 2
    assert series[key("metrics_proxy_upstream_up", upstream="shop", pod="web-0")] == 1
    assert dropped(proxy.scrape(), "shop", "duplicate_series", pod="web-0") >= 1

    # Invalid exposition text: the upstream is dropped whole, ours stay.
    (nginx.html / "exposition" / "app.txt").write_text(APP + "broken{line 1\n")
    wait_until(
        lambda: proxy.value("metrics_proxy_upstream_up", upstream="shop", pod="web-0") == 0,
        timeout=10,
        what="upstream down after invalid text",
    )
    series = proxy.scrape()
    assert not [name for name, _ in series if name.startswith("app_")]
    assert series[key("nginx_up", pod="web-0")] == 1
    assert series[
        key("metrics_proxy_fetch_errors_total", source="shop", reason="parse", pod="web-0")
    ]
    assert "invalid text exposition" in proxy.proc.output()

    # Fixed upstream: back without a restart.
    (nginx.html / "exposition" / "app.txt").write_text(APP)
    wait_until(
        lambda: proxy.value("app_jobs_processed", queue="a", upstream="shop", pod="web-0") == 3,
        timeout=10,
        what="upstream back",
    )


def test_without_prefix_our_names_win(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    (nginx.html / "exposition" / "app.txt").write_text(APP)
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "app=" + nginx.url("/exposition/app.txt"),
    ).wait_ready()
    series = proxy.scrape()
    assert series[key("nginx_up")] == 1
    assert series[key("jobs_processed", queue="a")] == 3  # a counter keeps its exact name
    assert dropped(proxy.scrape(), "app", "name_collision") >= 1


def test_two_upstreams_with_the_same_families(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    (nginx.html / "exposition" / "a.txt").write_text('queue_depth{queue="x"} 1\n')
    (nginx.html / "exposition" / "b.txt").write_text('queue_depth{queue="x"} 2\n')
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "a=" + nginx.url("/exposition/a.txt"),
        "--merge-url",
        "b=" + nginx.url("/exposition/b.txt"),
        "--merge-label",
        "container",
    ).wait_ready()
    series = proxy.scrape()
    assert series[key("queue_depth", queue="x", container="a")] == 1
    assert series[key("queue_depth", queue="x", container="b")] == 2


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (fake.truncated(APP.encode()[:200], declared=len(APP)), "truncated"),
        (fake.huge(64 * 1024 * 1024), "too_large"),
        (fake.answer(b"\x00\x01garbage\xff"), "parse"),
        (fake.raw(b"garbage\r\n\r\n"), "protocol"),
    ],
    ids=["truncated", "huge", "garbage-body", "not-http"],
)
def test_misbehaving_upstream(
    nginx: Site,
    proxies: Callable[..., Proxy],
    fakes: Callable[..., FakeUpstream],
    behaviour: fake.Behaviour,
    reason: str,
) -> None:
    server = fakes(behaviour)
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "app=" + server.url("/metrics"),
        "--merge-max-bytes",
        "1MiB",
    ).wait_ready()
    series = proxy.scrape()
    assert series[key("nginx_up")] == 1
    assert series[key("metrics_proxy_upstream_up", upstream="app")] == 0
    assert not [name for name, _ in series if name.startswith(("jobs_", "queue_", "latency_"))]
    assert proxy.scrape()[key("metrics_proxy_fetch_errors_total", source="app", reason=reason)]


def test_slow_upstream_does_not_hold_the_scrape(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    stop = threading.Event()
    try:
        server = fakes(fake.slow(APP.encode(), stop))
        proxy = proxies(
            "--stub-status-url",
            nginx.stub_status_url,
            "--merge-url",
            "app=" + server.url("/metrics"),
            "--merge-timeout",
            "300ms",
        ).wait_ready()
        series = proxy.scrape()
        assert series[key("nginx_up")] == 1
        assert series[key("metrics_proxy_upstream_up", upstream="app")] == 0
        assert proxy.scrape()[
            key("metrics_proxy_fetch_errors_total", source="app", reason="timeout")
        ]
    finally:
        stop.set()


def test_openmetrics_negotiated_and_gzip(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    (nginx.html / "exposition" / "app.txt").write_text(APP)
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "app=" + nginx.url("/exposition/app.txt"),
        "--merge-prefix",
        "app_",
    ).wait_ready()
    status, body, headers = proxy.get(
        "/metrics",
        headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "Accept-Encoding": "gzip",
        },
    )
    assert status == 200
    assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert headers["Content-Encoding"] == "gzip"
    families = {f.name: f for f in parse_openmetrics(gzip.decompress(body).decode())}
    assert families["nginx_connections_accepted"].type == "unknown"  # name kept, see exposition
    assert families["app_jobs_processed"].type == "unknown"  # upstream counter without _total
    assert families["app_latency_seconds"].type == "histogram"
    assert families["nginx_up"].samples[0].value == 1

    status, body, headers = proxy.get("/metrics", headers={"Accept": "text/plain"})
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in headers
    assert parse_samples(body)[key("app_jobs_processed", queue="a")] == 3


def test_credentials_in_a_merge_url_are_sent_and_never_logged(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    server = fakes(fake.answer(b"not exposition {{{\n"))
    url = server.url("/metrics").replace("http://", "http://prom:s3cret@")
    proxy = proxies("--stub-status-url", nginx.stub_status_url, "--merge-url", "app=" + url)
    proxy.wait_ready()
    assert proxy.scrape()[key("metrics_proxy_upstream_up", upstream="app")] == 0
    expected = "Basic " + base64.b64encode(b"prom:s3cret").decode()
    assert f"Authorization: {expected}\r\n".encode() in server.last_request
    log = proxy.proc.output()
    assert "invalid text exposition" in log and "prom:***@127.0.0.1" in log
    assert "s3cret" not in log
