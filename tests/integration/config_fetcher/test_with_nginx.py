"""The fetcher against real nginx processes: a real origin with ETag, and the app nginx
(apps/nginx/nginx.conf) serving what was published, reloaded by SIGHUP after a change."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.config_fetcher.helpers import fetch_once, site_bundle, tar_gz, watch_cmd
from tests.support.metrics import value
from tests.support.nginx import APPS, AppNginx, OriginNginx, have_nginx
from tests.support.procs import Proc, free_port, http_get, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed"),
]


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginNginx]:
    server = OriginNginx(tmp_path / "origin").start()
    try:
        yield server
    finally:
        server.stop()


def site_env(app: AppNginx, port: int) -> dict[str, str]:
    return {"NGINX_PORT": f"127.0.0.1:{port}", "SITE_DIR": str(app.site_dir), "POD_NAME": "web-0"}


def publish_site(origin: OriginNginx, files: dict[str, bytes] | None = None) -> None:
    data = tar_gz(files) if files is not None else site_bundle(APPS / "site")
    tmp = origin.docroot / ".site.tar.gz.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, origin.docroot / "site.tar.gz")  # the origin itself never serves a torn file


@pytest.fixture
def fetcher_watch(tmp_path: Path) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.stop()


def test_init_publish_then_nginx_serves_it(origin: OriginNginx, app: AppNginx) -> None:
    publish_site(origin)
    port = free_port()
    run = fetch_once(
        origin.url("site.tar.gz"), app.site_dir, "--env-subst", env=site_env(app, port)
    )
    assert run.code == 0, run.stdout
    app.start()
    status, body, _ = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/"), what="nginx site")
    assert status == 200
    assert b"Hello from the sidecars demo" in body
    assert b"<code>web-0</code>" in body, "env-subst filled in ${POD_NAME}"
    assert http_get(f"http://127.0.0.1:{port}/healthz")[:2] == (200, b"ok\n")


def watch(
    procs: list[Proc], tmp_path: Path, source: str, app: AppNginx, port: int, *extra: str
) -> tuple[Proc, int]:
    listen = free_port()
    proc = Proc(
        watch_cmd(
            source,
            str(app.site_dir),
            "--env-subst",
            "--reload-pidfile",
            str(app.pid_file),
            "--nginx-error-log",
            str(app.log_dir / "error.log"),
            "--listen",
            f"127.0.0.1:{listen}",
            "--retry-initial",
            "0.05",
            "--retry-max",
            "0.2",
            *extra,
        ),
        tmp_path / f"fetcher-{len(procs)}.log",
        env={**os.environ, **site_env(app, port)},
    )
    procs.append(proc)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
        timeout=20,
        what="fetcher ready",
    )
    return proc, listen


def test_watch_change_at_origin_is_served_after_reload(
    origin: OriginNginx, app: AppNginx, tmp_path: Path, fetcher_watch: list[Proc]
) -> None:
    site_conf = (APPS / "site" / "conf.d" / "site.conf").read_bytes()
    files = {"conf.d/site.conf": site_conf, "html/index.html": b"v1\n"}
    publish_site(origin, files)
    port = free_port()
    assert (
        fetch_once(
            origin.url("site.tar.gz"), app.site_dir, "--env-subst", env=site_env(app, port)
        ).code
        == 0
    )
    app.start()
    _, listen = watch(
        fetcher_watch,
        tmp_path,
        origin.url("site.tar.gz"),
        app,
        port,
        "--interval",
        "0.2",
        "--stale-after",
        "30",
        "--reload-debounce",
        "0.1",
    )
    assert http_get(f"http://127.0.0.1:{port}/version")[0] == 404
    # A config change (a new location) is only served once nginx has reloaded.
    new_conf = site_conf.replace(
        b"location / {", b'location = /version { return 200 "v2\\n"; }\n    location / {'
    )
    publish_site(origin, {"conf.d/site.conf": new_conf, "html/index.html": b"v2\n"})
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{port}/version")[:2] == (200, b"v2\n"),
        timeout=20,
        what="nginx serving the new config",
    )
    assert http_get(f"http://127.0.0.1:{port}/")[1] == b"v2\n"
    # Counted once nginx was seen to take it (new workers), just after it serves it.
    wait_until(
        lambda: value(listen, "config_fetcher_reloads_total", method="signal", result="ok") == 1,
        timeout=20,
        what="the verified reload counted",
    )
    # Unchanged origin: conditional GETs answered 304, nothing republished, no more reloads.
    wait_until(
        lambda: value(listen, "config_fetcher_fetches_total", result="not_modified") >= 3,
        timeout=20,
        what="304 answers",
    )
    assert " 304 " in (origin.root / "access.log").read_text()
    assert value(listen, "config_fetcher_reloads_total", method="signal", result="ok") == 1
    assert value(listen, "config_fetcher_fetches_total", result="published") == 1


def test_watch_survives_origin_outage_alerting_without_failing_liveness(
    origin: OriginNginx, app: AppNginx, tmp_path: Path, fetcher_watch: list[Proc]
) -> None:
    """An origin outage is an alert (stale, source down), not a restart: /healthz is the loop's
    own progress, and each failed attempt is progress."""
    publish_site(origin)
    port = free_port()
    proc, listen = watch(
        fetcher_watch,
        tmp_path,
        origin.url("site.tar.gz"),
        app,
        port,
        "--interval",
        "0.2",
        "--stale-after",
        "1.5",
    )
    health = f"http://127.0.0.1:{listen}/healthz"
    assert http_get(health)[0] == 200
    origin.stop()
    wait_until(lambda: value(listen, "config_fetcher_stale") == 1, timeout=20, what="stale alert")
    assert value(listen, "config_fetcher_last_success_age_seconds") > 1.5
    assert value(listen, "config_fetcher_source_up") == 0
    assert http_get(health)[0] == 200, "the origin being down is no reason to restart us"
    assert proc.popen.poll() is None, "a sidecar never exits on a transient error"
    status, body, _ = http_get(f"http://127.0.0.1:{listen}/readyz")
    assert status == 200, "published content still served"
    assert b"source unreachable" in body
    assert value(listen, "config_fetcher_failures_total", stage="fetch") >= 1
    origin.start()
    wait_until(lambda: value(listen, "config_fetcher_stale") == 0, timeout=20, what="stale cleared")
    assert value(listen, "config_fetcher_source_up") == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def _kubelet_swap(source: Path, files: dict[str, str], version: int) -> None:
    """Update a directory the way kubelet updates a mounted ConfigMap."""
    target = source / f"..v{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    tmp = source / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, source / "..data")
    for name in files:
        link = source / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_configmap_swaps_are_noticed_and_a_burst_gives_one_reload(
    app: AppNginx, tmp_path: Path, fetcher_watch: list[Proc]
) -> None:
    source = tmp_path / "configmap"
    source.mkdir()
    conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    _kubelet_swap(source, {"site.conf": conf}, 0)
    port = free_port()
    dest_conf = app.site_dir / "conf.d"
    # conf.d is the destination here: the ConfigMap's files become conf.d/*.conf.
    app.site_dir.mkdir(parents=True, exist_ok=True)
    listen = free_port()
    proc = Proc(
        watch_cmd(
            str(source),
            str(dest_conf),
            "--env-subst",
            "--reload-pidfile",
            str(app.pid_file),
            "--listen",
            f"127.0.0.1:{listen}",
            "--interval",
            "60",
            "--stale-after",
            "120",
            "--reload-debounce",
            "1",
        ),
        tmp_path / "fetcher.log",
        env={**os.environ, **site_env(app, port)},
    )
    fetcher_watch.append(proc)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
        timeout=20,
        what="fetcher ready",
    )
    (app.site_dir / "html").mkdir()
    (app.site_dir / "html" / "index.html").write_text("static\n")
    app.start()
    assert http_get(f"http://127.0.0.1:{port}/")[0] == 200
    # Five ConfigMap updates in a burst (interval is 60 s: only file events can notice them).
    for version in range(1, 6):
        body = conf.replace(
            "location / {", f'location = /v {{ return 200 "{version}\\n"; }}\n    location / {{'
        )
        _kubelet_swap(source, {"site.conf": body}, version)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{port}/v")[:2] == (200, b"5\n"),
        timeout=20,
        what="nginx serving the last ConfigMap version",
    )
    wait_until(
        lambda: value(listen, "config_fetcher_reloads_total", method="signal", result="ok") >= 1,
        timeout=20,
        what="the verified reload counted",
    )
    assert value(listen, "config_fetcher_reloads_total", method="signal", result="ok") == 1


def test_dest_inside_the_watched_directory_does_not_wake_the_fetcher(
    tmp_path: Path, fetcher_watch: list[Proc]
) -> None:
    """Our own publishes land in the watched directory; they must not count as changes."""
    shared = tmp_path / "shared"
    shared.mkdir()
    source = shared / "site.conf"
    source.write_text("v1\n")
    listen = free_port()
    proc = Proc(
        watch_cmd(
            str(source),
            str(shared / "out"),
            "--listen",
            f"127.0.0.1:{listen}",
            "--interval",
            "60",
            "--stale-after",
            "120",
        ),
        tmp_path / "fetcher.log",
    )
    fetcher_watch.append(proc)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
        timeout=20,
        what="fetcher ready",
    )
    for version in range(2, 5):
        tmp = shared / "site.conf.tmp"
        tmp.write_text(f"v{version}\n")
        os.replace(tmp, source)
        wait_until(
            lambda v=version: (shared / "out" / "site.conf").read_text() == f"v{v}\n",
            timeout=20,
            what=f"v{version} published",
        )
    # The counter moves just after the swap that made the content visible: wait for it.
    wait_until(
        lambda: value(listen, "config_fetcher_fetches_total", result="published") == 4,
        timeout=10,
        what="4 publishes counted",
    )
    unchanged = value(listen, "config_fetcher_fetches_total", result="unchanged")
    # A fetcher woken by its own publishes would check every ~50 ms, forever.
    assert unchanged <= 4, f"woken by its own publishes: {unchanged} unchanged checks"
    assert "changes detected" not in proc.output()


def test_an_etag_collision_at_the_origin_is_caught_by_the_etag_max_age(
    origin: OriginNginx, app: AppNginx, tmp_path: Path, fetcher_watch: list[Proc]
) -> None:
    """nginx's ETag is mtime (seconds) + size: a same-size change with the same mtime keeps the
    ETag, so conditional GETs answer 304 and only the unconditional GET after --etag-max-age
    finds the change."""
    publish_site(origin, {"html/index.html": b"version-1\n"})
    bundle = origin.docroot / "site.tar.gz"
    port = free_port()
    _, listen = watch(
        fetcher_watch,
        tmp_path,
        origin.url("site.tar.gz"),
        app,
        port,
        "--interval",
        "0.2",
        "--stale-after",
        "30",
        "--etag-max-age",
        "2",
    )
    wait_until(
        lambda: value(listen, "config_fetcher_fetches_total", result="not_modified") >= 1,
        timeout=20,
        what="a 304",
    )
    stat = bundle.stat()
    new = tar_gz({"html/index.html": b"version-2\n"})
    assert len(new) == stat.st_size, "same size, so nginx computes the same ETag"
    tmp = bundle.with_suffix(".tmp")
    tmp.write_bytes(new)
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old mtime, before it is visible
    os.replace(tmp, bundle)
    served = app.site_dir / "html" / "index.html"
    wait_until(
        lambda: served.read_bytes() == b"version-2\n",
        timeout=20,
        what="the colliding change published",
    )
    assert value(listen, "config_fetcher_fetches_total", result="not_modified") >= 2
