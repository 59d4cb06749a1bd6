"""e2e-pod: the metrics-proxy image in the real Pod manifest. Its /metrics, reached through the
Pod's port 9113, reads nginx over the Pod's localhost and its access log on the shared volume,
and moves with the traffic."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.support.procs import http_get, wait_until

pytestmark = pytest.mark.e2e_pod

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', labels or "")
            found[(name, frozenset(pairs))] = float(value)
    return found


@pytest.fixture(scope="module")
def app(engine: Podman, origin: pods.PlayedPod) -> Iterator[pods.PlayedPod]:
    pod = pods.play(engine, pods.APP_POD, name="sidecars-metrics")
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        yield pod
    finally:
        engine.down(pod.name)


def scrape(app: pods.PlayedPod) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body, headers = http_get(app.url(9113, "/metrics"), timeout=5)
    assert status == 200, body[:300]
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(body)


def responses(series: dict, status: str) -> float:
    return sum(
        value
        for (name, labels), value in series.items()
        if name == "nginx_http_responses_total" and ("status", status) in labels
    )


def test_metrics_through_the_pod_port_move_with_traffic(
    engine: Podman, app: pods.PlayedPod
) -> None:
    pods.wait_http_ok(app.url(9113, "/readyz"), what="metrics-proxy /readyz")
    pods.wait_http_ok(app.url(8080), what="nginx up")

    def up() -> dict | None:
        series = scrape(app)
        ups = [v for (name, _), v in series.items() if name == "nginx_up"]
        return series if ups == [1.0] else None

    series = wait_until(up, timeout=60, interval=0.5, what="nginx_up 1 through port 9113")
    [(_, up_labels)] = [key for key in series if key[0] == "nginx_up"]
    assert dict(up_labels)["pod"] == app.name  # the Downward API, expanded by the proxy
    requests_before = next(v for (n, _), v in series.items() if n == "nginx_http_requests_total")
    ok_before, missing_before = responses(series, "200"), responses(series, "404")

    for _ in range(20):
        assert http_get(app.url(8080))[0] == 200
    for _ in range(3):
        assert http_get(app.url(8080, "/no-such-page.html"))[0] == 404

    def moved() -> bool:
        now = scrape(app)
        # >= for 200: the readiness wait above may still be on its way through the log;
        # nothing but this test asks for a missing page.
        return (
            responses(now, "200") >= ok_before + 20 and responses(now, "404") == missing_before + 3
        )

    try:
        wait_until(moved, timeout=30, interval=0.5, what="per-status counts moving with traffic")
    except AssertionError as exc:
        name = f"{app.name}-metrics-proxy"
        listing = engine("exec", name, "ls", "-la", "/var/log/nginx", check=False)
        raise AssertionError(
            f"{exc}\nhave: {responses(scrape(app), '200')} x 200, "
            f"{responses(scrape(app), '404')} x 404\n/var/log/nginx: {listing.stdout}"
            f"{listing.stderr}\nmetrics-proxy log:\n{engine.logs(name)[-3000:]}"
        ) from None
    after = scrape(app)
    requests_after = next(v for (n, _), v in after.items() if n == "nginx_http_requests_total")
    assert requests_after >= requests_before + 23
    assert any(n == "nginx_http_request_duration_seconds_count" for n, _ in after)


def test_probes_stay_open_and_the_container_is_locked_down(
    engine: Podman, app: pods.PlayedPod
) -> None:
    pods.wait_http_ok(app.url(9113, "/healthz"), what="metrics-proxy /healthz")
    name = f"{app.name}-metrics-proxy"
    assert engine("exec", name, "id", "-u").stdout.strip() == "101"
    touch = engine("exec", name, "touch", "/var/log/nginx/probe", check=False)
    assert touch.returncode != 0  # the logs volume is mounted read-only for the proxy
