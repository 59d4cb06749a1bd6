"""The headline: real nginx, traffic of a known shape, a real Prometheus scraping the proxy
every second; Prometheus's HTTP API must show exactly that traffic."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy
from tests.support.procs import wait_until
from tests.support.prometheus import Prometheus, ScrapeJob, have_prometheus

pytestmark = pytest.mark.integration


def send(site: Site, method: str, path: str, count: int) -> list[int]:
    """``count`` requests over one keep-alive connection; their statuses."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    statuses = []
    try:
        for _ in range(count):
            conn.request(method, path, body=b"x=1" if method == "POST" else None)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[list[ScrapeJob]], Prometheus]]:
    if not have_prometheus():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    made: list[Prometheus] = []

    def start(jobs: list[ScrapeJob]) -> Prometheus:
        prom = Prometheus(tmp_path / f"prometheus-{len(made)}", jobs)
        made.append(prom)
        return prom.start()

    try:
        yield start
    finally:
        for prom in made:
            prom.stop()


def test_prometheus_sees_exactly_the_traffic(
    nginx: Site,
    proxies: Callable[..., Proxy],
    prometheus_for: Callable[[list[ScrapeJob]], Prometheus],
) -> None:
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--access-log",
        str(nginx.access_log),
        "--const-labels",
        "pod=${POD_NAME}",
        env={"POD_NAME": "web-0", "PATH": "/usr/bin:/bin"},
    ).wait_ready()
    prom = prometheus_for([ScrapeJob("nginx", [f"127.0.0.1:{proxy.port}"])])
    wait_until(
        lambda: prom.values("nginx_up") == {"": 1.0}, timeout=30, what="nginx_up == 1 in Prometheus"
    )

    assert send(nginx, "GET", "/", 100) == [200] * 100
    assert send(nginx, "GET", "/missing.html", 7) == [404] * 7
    assert send(nginx, "GET", "/fail", 3) == [500] * 3
    assert send(nginx, "POST", "/api/submit", 5) == [201] * 5

    expected = {"200": 100.0, "404": 7.0, "500": 3.0, "201": 5.0}
    by_status = "sum by (status) (nginx_http_responses_total)"
    wait_until(
        lambda: prom.values(by_status, by="status") == expected,
        timeout=30,
        what=f"per-status counts {expected} in Prometheus",
    )
    assert prom.values("sum by (method) (nginx_http_responses_total)", by="method") == {
        "GET": 110.0,
        "POST": 5.0,
    }
    assert prom.values("nginx_http_request_duration_seconds_count") == {"": 115.0}
    # Prometheus asks for OpenMetrics and gets it; the exporter's counters keep their exact
    # names there, typed unknown (OpenMetrics has no counter without _total).
    assert prom.values("nginx_connections_accepted")[""] >= 4
    [accepted] = prom.metadata("nginx_connections_accepted")
    assert accepted == {"type": "unknown", "help": "Accepted client connections", "unit": ""}
    assert prom.metadata("nginx_http_requests")[0]["type"] == "counter"
    assert prom.values("nginx_http_requests_total")[""] >= 115
    # const labels from the Downward API's env vars reach every series
    assert {r["metric"]["pod"] for r in prom.query("nginx_up")} == {"web-0"}
    assert prom.targets_health() == ["up"]


def test_prometheus_scrapes_through_tls_and_a_bearer_token(
    nginx: Site,
    proxies: Callable[..., Proxy],
    prometheus_for: Callable[[list[ScrapeJob]], Prometheus],
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "token").write_text("prom-token\n")
    (tmp_path / "wrong-token").write_text("not-it\n")
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--bearer-token-file",
        str(tmp_path / "token"),
        "--tls-cert-file",
        str(tmp_path / "server.pem"),
        "--tls-key-file",
        str(tmp_path / "server.pem"),
    )
    target = [f"127.0.0.1:{proxy.port}"]
    prom = prometheus_for(
        [
            ScrapeJob(
                "good",
                target,
                "https",
                bearer_token_file=tmp_path / "token",
                ca_file=tmp_path / "ca.pem",
            ),
            ScrapeJob(
                "bad",
                target,
                "https",
                bearer_token_file=tmp_path / "wrong-token",
                ca_file=tmp_path / "ca.pem",
            ),
        ]
    )
    wait_until(
        lambda: prom.values('nginx_up{job="good"}') == {"": 1.0},
        timeout=30,
        what="nginx_up == 1 scraped over TLS with the token",
    )
    wait_until(
        lambda: prom.values('up{job="bad"}') == {"": 0.0},
        timeout=30,
        what="the job with the wrong token down",
    )
    assert prom.values('up{job="good"}') == {"": 1.0}
