"""e2e-pod: the real images, the real manifest, run by podman kube play.

The app Pod fetches its site from the demo origin pod by the origin's name (aardvark-dns on the
engine's network resolves pod names), exactly the URL k8s/pod.yaml carries for Kubernetes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.support.procs import http_get

pytestmark = pytest.mark.e2e_pod

PAGE_MARK = "Hello from the sidecars demo"


def started(engine: Podman, container: str) -> datetime:
    return _time(engine.inspect(container)["State"]["StartedAt"])


def finished(engine: Podman, container: str) -> datetime:
    return _time(engine.inspect(container)["State"]["FinishedAt"])


def _time(raw: str) -> datetime:
    """RFC 3339 with nanoseconds (podman inspect's JSON), cut to the microseconds Python keeps."""
    match = re.fullmatch(r"(.+T[\d:]+)(?:\.(\d+))?(Z|[+-][\d:]+)", raw)
    assert match, f"unexpected podman time {raw!r}"
    head, frac, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{head}.{((frac or '') + '000000')[:6]}{zone}")


def in_pod(engine: Podman, container: str, script: str) -> str:
    """Run a Python snippet in one of the Pod's containers (the fetcher image has Python)."""
    return engine("exec", container, "python3", "-c", script).stdout


@pytest.fixture(scope="module")
def app(engine: Podman, origin: pods.PlayedPod) -> Iterator[pods.PlayedPod]:
    pod = pods.play(engine, pods.APP_POD)
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        yield pod
    finally:
        engine.down(pod.name)


def test_init_container_published_before_nginx_started(engine: Podman, app: pods.PlayedPod):
    init, nginx = f"{app.name}-config-fetcher-init", f"{app.name}-nginx"
    assert engine.inspect(init)["State"]["ExitCode"] == 0
    assert finished(engine, init) < started(engine, nginx)
    published = [json.loads(line) for line in engine.logs(init).splitlines() if "{" in line]
    assert any(entry.get("msg") == "published" for entry in published), published


def test_nginx_serves_fetched_content_on_host_port(app: pods.PlayedPod):
    body = pods.wait_http_ok(app.url(8080), what="nginx through its hostPort").decode()
    assert PAGE_MARK in body
    # --env-subst filled in the Downward API's pod name.
    assert f"<code>{app.name}</code>" in body


def test_nginx_serves_over_pod_localhost_and_pod_ip(engine: Podman, app: pods.PlayedPod):
    pods.wait_http_ok(app.url(8080), what="nginx up")
    fetcher = f"{app.name}-config-fetcher"
    page = in_pod(
        engine,
        fetcher,
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').read().decode())",
    )
    assert PAGE_MARK in page
    # stub_status listens on the Pod's 127.0.0.1 only: reachable from a sidecar.
    status = in_pod(
        engine,
        fetcher,
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:8081/stub_status').read().decode())",
    )
    assert "Active connections:" in status
    status_code, body, _ = http_get(f"http://{engine.pod_ip(app.name)}:8080/")
    assert status_code == 200 and PAGE_MARK in body.decode()


def test_watch_sidecar_ready_and_sees_nginx_master(engine: Podman, app: pods.PlayedPod):
    pods.wait_http_ok(app.url(9101, "/readyz"), what="config-fetcher /readyz")
    status, _, _ = http_get(app.url(9101, "/healthz"))
    assert status == 200
    # shareProcessNamespace + the same UID: the sidecar may signal the nginx master.
    pods.wait_http_ok(app.url(8080), what="nginx up")
    in_pod(
        engine,
        f"{app.name}-config-fetcher",
        "import os; os.kill(int(open('/run/nginx/nginx.pid').read()), 0)",
    )


def test_containers_run_unprivileged_on_read_only_root(engine: Podman, app: pods.PlayedPod):
    pods.wait_http_ok(app.url(8080), what="nginx up")
    for container in ("config-fetcher", "nginx"):
        name = f"{app.name}-{container}"
        assert engine("exec", name, "id", "-u").stdout.strip() == "101"
        assert engine("exec", name, "id", "-g").stdout.strip() == "101"
        touch = engine("exec", name, "touch", "/etc/probe", check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    # The runtime image carries no installer.
    no_pip = engine("exec", f"{app.name}-config-fetcher", "python3", "-m", "pip", check=False)
    assert no_pip.returncode != 0 and "No module named pip" in no_pip.stderr


def test_broken_source_fails_in_init_container(engine: Podman, origin: pods.PlayedPod):
    missing = "http://sidecars-origin:8090/missing.tar.gz"
    pod = pods.play(
        engine,
        pods.APP_POD,
        name="sidecars-broken",
        env={"CONFIG_FETCHER_SOURCE": missing},
    )
    try:
        assert pod.play.returncode == 125, (pod.play.returncode, pod.play.stderr)
        assert "init container" in pod.play.stderr
        assert "exited with code 1" in pod.play.stderr
        log = engine.logs(f"{pod.name}-config-fetcher-init")
        errors = [json.loads(line) for line in log.splitlines() if '"error"' in line]
        assert len(errors) == 1, log
        assert missing in errors[0]["msg"] and "404" in errors[0]["msg"]
        # nginx never started.
        nginx = engine.inspect(f"{pod.name}-nginx")["State"]
        assert nginx["Status"] == "created" and not nginx["Running"]
    finally:
        engine.down(pod.name)
