"""e2e-pod: `sidecars inject` of the plain nginx Deployment (k8s/workloads/nginx-deployment.yaml)
with an nginx image laid out like the official one (tests/e2e/injected.py), played by podman:
the page served, the access log shipped (log-shipper's stdout sink), nginx's metrics scraped
from the metrics-proxy, and a config change at the origin served after a reload.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8s import variants
from tests.e2e import images as images_mod
from tests.e2e import injected as injected_mod
from tests.e2e import pods
from tests.e2e.demo import following
from tests.e2e.engine import Podman
from tests.e2e.test_metrics_proxy_pod import responses, samples
from tests.e2e.test_pod import site_bundle
from tests.support.procs import free_port, http_get, wait_until

pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]

MARK = uuid.uuid4().hex[:12]
ORIGIN = f"inject-origin-{MARK}"
ORIGIN_VOLUME = f"{ORIGIN}-content"


@dataclass
class Played:
    app: pods.PlayedPod
    origin_content: Path  # the writable origin's /srv/origin: a new site.tar.gz is a change


def writable_origin(docs: list[dict]) -> None:
    spec = docs[0]["spec"]
    spec.setdefault("volumes", []).append({"name": ORIGIN_VOLUME, "emptyDir": {}})
    mount = {"name": ORIGIN_VOLUME, "mountPath": "/srv/origin"}
    spec["containers"][0]["volumeMounts"].append(mount)


@pytest.fixture(scope="module")
def played(engine: Podman, images: images_mod.Built, tmp_path_factory) -> Iterator[Played]:
    image = injected_mod.build_official_layout(engine, engine.root / "official-layout")
    origin = pods.play(engine, pods.ORIGIN_POD, name=ORIGIN, edit=writable_origin)
    name = None
    try:
        assert origin.play.returncode == 0, origin.play.stderr
        # podman copied the image's /srv/origin (site.tar.gz) into the fresh volume.
        content = engine("volume", "inspect", ORIGIN_VOLUME, "--format", "{{.Mountpoint}}")
        pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the writable origin")
        injected = injected_mod.inject(
            [f"CONFIG_FETCHER_SOURCE=http://{ORIGIN}:8090/site.tar.gz", "CONFIG_FETCHER_INTERVAL=1"]
        )
        ports = {port: free_port() for port in injected_mod.container_ports(injected)}
        name = f"inject-{MARK}"
        docs = injected_mod.podman_pod(
            injected, tmp_path_factory.mktemp("conf"), image, name, ports
        )
        result = engine.play(variants.dump(docs), name)
        assert result.returncode == 0, result.stderr
        app = pods.PlayedPod(name=name, ports=ports, play=result)
        yield Played(app=app, origin_content=Path(content.stdout.strip()))
    finally:
        if name is not None:
            engine.down(name)
        engine.down(origin.name)


def test_injected_deployment_serves_ships_is_scraped_and_reloads(engine: Podman, played: Played):
    app = played.app
    try:
        page = pods.wait_http_ok(app.url(8080, "/"), timeout=120, what="the page via nginx")
    except AssertionError as exc:  # why nginx does not listen is in its own log
        raise AssertionError(f"{exc}\nnginx: {engine.logs(f'{app.name}-nginx')}") from None
    assert b"Hello from the sidecars demo" in page
    wait_until(
        lambda: following(app.url(8080, "/"), app.url(9113, "/metrics")),
        timeout=60,
        interval=0.5,
        what="the metrics-proxy following the access log",
    )
    for _ in range(3):
        status, _, _ = http_get(app.url(8080, f"/missing-{MARK}"), timeout=5)
        assert status == 404

    def shipped() -> bool:
        return engine.logs(f"{app.name}-log-shipper").count(f"/missing-{MARK}") >= 3

    wait_until(shipped, timeout=60, what="the access-log lines at the log-shipper's sink")

    def scraped() -> dict | None:
        status, body, _ = http_get(app.url(9113, "/metrics"), timeout=5)
        series = samples(body) if status == 200 else {}
        ups = [v for (name, _), v in series.items() if name == "nginx_up"]
        return series if ups == [1.0] and responses(series, "404") >= 3 else None

    wait_until(scraped, timeout=60, interval=0.5, what="nginx_up 1 and the 404s, from :9113")

    # A config change at the origin: the watch sidecar publishes it and SIGHUPs the nginx master
    # it finds without a pid file of its own (the official layout writes /var/run/nginx.pid on
    # nginx's own volume): the one holding the shared error log open.
    pid_file = ("exec", f"{app.name}-nginx", "cat", "/var/run/nginx.pid")
    master = engine(*pid_file).stdout
    mark = f"reloaded-{MARK}"
    tmp = played.origin_content / ".site.tar.gz.tmp"
    tmp.write_bytes(site_bundle(mark))
    tmp.rename(played.origin_content / "site.tar.gz")  # the origin serves all-old or all-new

    def served() -> bool:
        status, body, headers = http_get(app.url(8080), timeout=2)
        # The header comes from the new config: nginx has reloaded.
        return status == 200 and mark in body.decode() and headers.get("X-Sidecars-Mark") == mark

    wait_until(served, timeout=60, interval=0.2, what="the changed site after the reload")
    assert engine(*pid_file).stdout == master

    def reloaded() -> list[dict]:
        log = engine.logs(f"{app.name}-config-fetcher")
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        return [e for e in entries if e.get("msg") == "reloaded nginx"]

    assert wait_until(reloaded, timeout=10, what="the reload log line")[-1]["method"] == "signal"
