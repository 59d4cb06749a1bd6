"""e2e-pod: the config-fetcher sidecar over a Pod's life, on the real images and manifest.

A broken bundle pushed to the running origin is refused by nginx: the fetcher rolls the volume
back, nginx keeps serving, metrics and logs say "rejected". Then the origin goes away for longer
than --stale-after: the Pod stays up and serving, the fetcher live and ready (also when it is
restarted mid-outage), only its stale/source_up metrics alert.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.support.metrics import scrape
from tests.support.procs import http_get, wait_until

pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]

PAGE_MARK = "Hello from the sidecars demo"
ORIGIN_VOLUME = "rollback-origin-content"


def broken_bundle() -> bytes:
    """The demo bundle with a syntax error in its server block and a page that must not show."""
    site = pods.REPO / "apps" / "site"
    conf = (site / "conf.d" / "site.conf").read_text().replace("location / {", "locatio / {", 1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("conf.d/site.conf", conf.encode()),
            ("html/index.html", b"<p>broken bundle</p>\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def metric(pod: pods.PlayedPod, name: str, **labels: str) -> float:
    return scrape(pod.ports[9101]).get((name, frozenset(labels.items())), 0.0)


def series(pod: pods.PlayedPod, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in scrape(pod.ports[9101]) if n == name]


def fetcher_events(engine: Podman, container: str) -> list[dict]:
    lines = engine.logs(container).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture
def played(engine: Podman, images) -> Iterator[tuple[pods.PlayedPod, pods.PlayedPod, Path]]:
    def writable_origin(docs):
        spec = docs[0]["spec"]
        spec.setdefault("volumes", []).append({"name": ORIGIN_VOLUME, "emptyDir": {}})
        spec["containers"][0]["volumeMounts"].append(
            {"name": ORIGIN_VOLUME, "mountPath": "/srv/origin"}
        )

    def fast_and_soon_stale(docs):
        for container in docs[0]["spec"]["containers"]:
            if "--watch" in container.get("args", []):
                container["args"] = [a for a in container["args"] if "--interval" not in a]
                container["args"] += ["--interval=1", "--stale-after=4"]

    origin = pods.play(engine, pods.ORIGIN_POD, name="rollback-origin", edit=writable_origin)
    app = None
    try:
        assert origin.play.returncode == 0, origin.play.stderr
        content = Path(
            engine("volume", "inspect", ORIGIN_VOLUME, "--format", "{{.Mountpoint}}").stdout.strip()
        )
        pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the writable origin")
        app = pods.play(
            engine,
            pods.APP_POD,
            name="sidecars-rollback",
            env={"CONFIG_FETCHER_SOURCE": "http://rollback-origin:8090/site.tar.gz"},
            edit=fast_and_soon_stale,
        )
        assert app.play.returncode == 0, app.play.stderr
        yield origin, app, content
    finally:
        if app is not None:
            engine.down(app.name)
        engine.down(origin.name)


def test_broken_bundle_rolled_back_and_origin_outage_ridden_out(engine: Podman, played) -> None:
    origin, app, content = played
    fetcher = f"{app.name}-config-fetcher"
    assert PAGE_MARK in pods.wait_http_ok(app.url(8080), what="first page").decode()
    pods.wait_http_ok(app.url(9101, "/readyz"), what="watch sidecar ready")
    good = wait_until(
        lambda: series(app, "config_fetcher_served_info"), timeout=30, what="nginx seen serving"
    )
    master = engine("exec", f"{app.name}-nginx", "cat", "/run/nginx/nginx.pid").stdout

    # A broken bundle at the origin: published, refused by nginx, rolled back.
    tmp = content / ".site.tar.gz.tmp"
    tmp.write_bytes(broken_bundle())
    tmp.rename(content / "site.tar.gz")
    wait_until(
        lambda: (
            metric(app, "config_fetcher_reloads_total", method="signal", result="rejected") == 1
        ),
        timeout=60,
        interval=0.5,
        what="the reload counted rejected",
    )
    (line,) = [e for e in fetcher_events(engine, fetcher) if e.get("result") == "rejected"]
    assert line["level"] == "error" and "[emerg]" in line["nginx_error"], line
    assert "locatio" in line["msg"]
    assert series(app, "config_fetcher_served_info") == good
    assert [s["version"] for s in series(app, "config_fetcher_published_info")] == [
        good[0]["version"]
    ]
    page = pods.wait_http_ok(app.url(8080), what="nginx still serving").decode()
    assert PAGE_MARK in page and "broken bundle" not in page
    assert engine("exec", f"{app.name}-nginx", "cat", "/run/nginx/nginx.pid").stdout == master
    wait_until(
        lambda: (
            metric(app, "config_fetcher_fetches_total", result="rejected")
            + metric(app, "config_fetcher_fetches_total", result="not_modified")
            >= 3
        ),
        timeout=30,
        interval=0.5,
        what="the refused bundle seen again",
    )
    assert metric(app, "config_fetcher_reloads_total", method="signal", result="rejected") == 1

    # The origin goes away for longer than --stale-after (4 s): an alert, not an outage.
    started = engine.inspect(fetcher)["State"]["StartedAt"]
    engine("stop", "--time", "5", f"{origin.name}-origin")
    wait_until(
        lambda: metric(app, "config_fetcher_stale") == 1,
        timeout=60,
        interval=0.5,
        what="the stale alert",
    )
    # A fetch in flight when the origin went away may take its --timeout (30 s) to fail.
    wait_until(
        lambda: metric(app, "config_fetcher_source_up") == 0,
        timeout=90,
        interval=0.5,
        what="the source seen down",
    )
    assert http_get(app.url(9101, "/healthz"))[0] == 200, "liveness: the loop still turns"
    status, body, _ = http_get(app.url(9101, "/readyz"))
    assert status == 200 and b"source unreachable" in body
    assert PAGE_MARK in pods.wait_http_ok(app.url(8080), what="nginx serving").decode()
    state = engine.inspect(fetcher)["State"]
    assert state["Running"] and state["StartedAt"] == started, "the fetcher was not restarted"

    # Restarted mid-outage (as the kubelet would after an OOM kill): ready on what it has.
    engine("restart", "--time", "10", fetcher)
    pods.wait_http_ok(app.url(9101, "/readyz"), timeout=60, what="ready again, origin down")
    assert http_get(app.url(9101, "/healthz"))[0] == 200
    assert series(app, "config_fetcher_served_info") == good, "read back from the volume"
    assert PAGE_MARK in pods.wait_http_ok(app.url(8080), what="nginx serving").decode()
