"""e2e-pod: the real images, the real manifest, run by podman kube play.

The app Pod fetches its site from the demo origin pod by the origin's name (aardvark-dns on the
engine's network resolves pod names), exactly the URL k8s/pod.yaml carries for Kubernetes.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.support.procs import http_get, wait_until

# The first test also pays for the session's image builds (about a minute here).
pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]

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


def site_bundle(mark: str) -> bytes:
    """The demo bundle (apps/site) changed in its config (a header only a reload can bring)
    and its content."""
    site = pods.REPO / "apps" / "site"
    conf = (site / "conf.d" / "site.conf").read_text()
    conf = conf.replace(
        "server {", f'server {{\n    add_header X-Sidecars-Mark "{mark}" always;', 1
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("conf.d/site.conf", conf.encode()),
            ("html/index.html", f"<p>{mark}</p>\n".encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_change_at_origin_is_served_after_hot_reload(engine: Podman, images):
    """The watch sidecar polls the origin, publishes the change into the shared volume and
    SIGHUPs nginx across containers (shareProcessNamespace): new page, same nginx master."""

    def writable_origin(docs):
        spec = docs[0]["spec"]
        spec.setdefault("volumes", []).append({"name": "reload-origin-content", "emptyDir": {}})
        spec["containers"][0]["volumeMounts"].append(
            {"name": "reload-origin-content", "mountPath": "/srv/origin"}
        )

    def fast_poll(docs):
        for container in docs[0]["spec"]["containers"]:
            if "--watch" in container.get("args", []):
                container["args"] = [a for a in container["args"] if "--interval" not in a]
                container["args"].append("--interval=1")

    origin = pods.play(engine, pods.ORIGIN_POD, name="reload-origin", edit=writable_origin)
    app = None
    try:
        assert origin.play.returncode == 0, origin.play.stderr
        # podman copied the image's /srv/origin (site.tar.gz) into the fresh volume.
        content = Path(
            engine(
                "volume", "inspect", "reload-origin-content", "--format", "{{.Mountpoint}}"
            ).stdout.strip()
        )
        pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the writable origin")
        app = pods.play(
            engine,
            pods.APP_POD,
            name="sidecars-reload",
            env={"CONFIG_FETCHER_SOURCE": "http://reload-origin:8090/site.tar.gz"},
            edit=fast_poll,
        )
        assert app.play.returncode == 0, app.play.stderr
        assert PAGE_MARK in pods.wait_http_ok(app.url(8080), what="first page").decode()
        pods.wait_http_ok(app.url(9101, "/readyz"), what="watch sidecar ready")
        master = engine("exec", f"{app.name}-nginx", "cat", "/run/nginx/nginx.pid").stdout

        mark = f"reloaded-{uuid.uuid4().hex}"
        tmp = content / ".site.tar.gz.tmp"
        tmp.write_bytes(site_bundle(mark))
        tmp.rename(content / "site.tar.gz")  # the origin serves all-old or all-new

        def served() -> bool:
            status, body, headers = http_get(app.url(8080), timeout=2)
            # The header comes from the new config: nginx has reloaded.
            return (
                status == 200 and mark in body.decode() and headers.get("X-Sidecars-Mark") == mark
            )

        wait_until(served, timeout=30, interval=0.2, what="the changed site after the reload")
        assert engine("exec", f"{app.name}-nginx", "cat", "/run/nginx/nginx.pid").stdout == master

        def reloaded() -> list[dict]:
            log = engine.logs(f"{app.name}-config-fetcher")
            entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            return [e for e in entries if e.get("msg") == "reloaded nginx"]

        assert (
            wait_until(reloaded, timeout=10, what="the reload log line")[-1]["method"] == "signal"
        )
    finally:
        if app is not None:
            engine.down(app.name)
        engine.down(origin.name)


def test_sigterm_drains_the_watch_sidecar(engine: Podman, app: pods.PlayedPod):
    """Last in this module: it stops the module's sidecar."""
    sidecar = f"{app.name}-config-fetcher"
    pods.wait_http_ok(app.url(9101, "/readyz"), what="watch sidecar ready")
    engine("stop", "--time", "20", sidecar)
    assert engine.inspect(sidecar)["State"]["ExitCode"] == 0
    stopping = [
        json.loads(line) for line in engine.logs(sidecar).splitlines() if "stopping" in line
    ]
    assert stopping and stopping[0]["signal"] == "SIGTERM"
    # nginx is untouched by its sidecar going away.
    assert PAGE_MARK in pods.wait_http_ok(app.url(8080), what="nginx still serving").decode()
