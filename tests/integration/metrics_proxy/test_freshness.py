"""Each scrape reads nginx anew: the numbers kept between scrapes (templates, rendered blocks)
never stand in for a fetch, in either format."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy, parse_samples

pytestmark = pytest.mark.integration

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def requests_total(body: bytes) -> float:
    lines = [line for line in body.decode().splitlines() if line.startswith("nginx_http_req")]
    assert len(lines) == 1, lines
    return float(lines[0].split()[-1])


def test_every_scrape_shows_a_stub_status_fetched_for_it(
    nginx: Site, proxies: Callable[..., Proxy]
) -> None:
    proxy = proxies("--stub-status-url", nginx.stub_status_url).wait_ready()
    seen = []
    for index in range(6):
        status, body, headers = proxy.get("/metrics", headers=OPENMETRICS if index % 2 else None)
        assert status == 200
        assert headers["Content-Type"].startswith(
            "application/openmetrics-text" if index % 2 else "text/plain"
        )
        seen.append(requests_total(body))
    # nginx counts each stub_status request, and nothing else asks it here: one fetch per
    # scrape, each one newer than the last.
    assert [b - a for a, b in itertools.pairwise(seen)] == [1.0] * 5
    samples = proxy.scrape()
    assert samples[("metrics_proxy_collections_total", frozenset())] == 7.0
    assert samples[("metrics_proxy_scrapes_total", frozenset({("result", "ok")}))] == 6.0


def test_nginx_going_down_shows_in_the_next_scrape_and_coming_back_too(
    nginx: Site, proxies: Callable[..., Proxy]
) -> None:
    proxy = proxies("--stub-status-url", nginx.stub_status_url).wait_ready()
    assert proxy.value("nginx_up") == 1.0
    nginx.stop()
    down = proxy.scrape()
    assert down[("nginx_up", frozenset())] == 0.0
    assert not any(name.startswith("nginx_connections") for name, _ in down)
    nginx.start()
    _, body, _ = proxy.get("/metrics")
    up = parse_samples(body)
    assert up[("nginx_up", frozenset())] == 1.0
    assert ("nginx_connections_active", frozenset()) in up
