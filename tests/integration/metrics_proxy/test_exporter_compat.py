"""Side by side with Debian's prometheus-nginx-exporter against the same real nginx: the same
families (names, types, help texts, labels) and consistent values, so its dashboards and alerts
work unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy
from tests.support.procs import Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.integration

EXPORTER = shutil.which("prometheus-nginx-exporter") or "/usr/bin/prometheus-nginx-exporter"

GAUGES = (
    "nginx_connections_active",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
)
COUNTERS = ("nginx_connections_accepted", "nginx_connections_handled", "nginx_http_requests")


@pytest.fixture
def exporter(nginx: Site, tmp_path: Path) -> Iterator[Callable[..., int]]:
    if not Path(EXPORTER).exists():
        pytest.skip("prometheus-nginx-exporter is not installed (apt-get install it)")
    procs: list[Proc] = []

    def start(*args: str) -> int:
        port = free_port()
        procs.append(
            Proc(
                [
                    EXPORTER,
                    f"-nginx.scrape-uri={nginx.stub_status_url}",
                    f"-web.listen-address=127.0.0.1:{port}",
                    *args,
                ],
                tmp_path / f"exporter-{port}.out",
            )
        )
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 200,
            timeout=15,
            what="prometheus-nginx-exporter /metrics",
        )
        return port

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop()


def families(body: bytes) -> dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]]:
    """nginx_* families: name -> (type, help, [(labels, value)])."""
    return {
        f.name: (f.type, f.documentation, [(s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(body.decode())
        if f.name.startswith("nginx_")
    }


def metadata(body: bytes) -> list[str]:
    return [
        line for line in body.decode().splitlines() if line.startswith("# ") and " nginx_" in line
    ]


def sample_names(body: bytes) -> list[str]:
    return [
        line.split("{")[0].split(" ")[0]
        for line in body.decode().splitlines()
        if line.startswith("nginx_")
    ]


def scrape(url: str) -> bytes:
    status, body, headers = http_get(url)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return body


@pytest.mark.parametrize("const_labels", [(), ("pod=web-0", "team=shop")], ids=["plain", "labels"])
def test_same_families_and_consistent_values(
    nginx: Site,
    exporter: Callable[..., int],
    proxies: Callable[..., Proxy],
    const_labels: tuple[str, ...],
) -> None:
    exporter_port = exporter(
        *((f"-prometheus.const-labels={','.join(const_labels)}",) if const_labels else ())
    )
    flags = [arg for label in const_labels for arg in ("--const-labels", label)]
    proxy = proxies("--stub-status-url", nginx.stub_status_url, *flags).wait_ready()

    before_body = scrape(f"http://127.0.0.1:{exporter_port}/metrics")
    our_body = scrape(proxy.url + "/metrics")
    before, ours = families(before_body), families(our_body)
    after = families(scrape(f"http://127.0.0.1:{exporter_port}/metrics"))

    # HELP and TYPE lines byte for byte; sample names exactly (no _total added or dropped)
    assert metadata(our_body) == metadata(before_body)
    assert sample_names(our_body) == sample_names(before_body)

    assert set(ours) == set(before) == set(after)
    assert len(ours) == 8
    for name, (kind, help_text, samples) in ours.items():
        assert (kind, help_text) == before[name][:2], name
        assert [labels for labels, _ in samples] == [labels for labels, _ in before[name][2]]
    assert ours["nginx_up"][2][0][1] == 1.0
    for name in COUNTERS:
        # every scrape is a request to nginx, so counters only grow from one reading to the next
        assert before[name][2][0][1] <= ours[name][2][0][1] <= after[name][2][0][1], name
    for name in GAUGES:
        assert ours[name][2][0][1] >= 0


def test_both_report_nginx_down_the_same_way(
    nginx: Site, exporter: Callable[..., int], proxies: Callable[..., Proxy]
) -> None:
    exporter_port = exporter()
    proxy = proxies("--stub-status-url", nginx.stub_status_url).wait_ready()
    nginx.stop()
    theirs = families(scrape(f"http://127.0.0.1:{exporter_port}/metrics"))
    ours = families(scrape(proxy.url + "/metrics"))
    assert (
        ours == theirs == {"nginx_up": ("gauge", "Status of the last metric scrape", [({}, 0.0)])}
    )
