"""The watch fetcher through origin outages: a verified version on the volume is enough to be
ready, an unreachable origin is an alert (stale, source_up 0), and liveness is the fetcher's own
loop making progress, so the kubelet never restarts it for an outage nginx rides out."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from sidecars.config_fetcher.served import STATE_NAME
from tests.integration.config_fetcher.helpers import snapshot, watch_cmd
from tests.integration.config_fetcher.pod import PodLike, bundle, pod, push
from tests.support.nginx import have_nginx
from tests.support.procs import Proc, free_port, http_get, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed"),
]
__all__ = ["pod"]  # the fixture, used by name


def test_restarted_with_the_origin_down_is_ready_live_and_stale(pod: PodLike) -> None:
    push(pod.origin, bundle("v1"))
    assert pod.init().code == 0
    pod.app.start()
    first = pod.watch()
    assert first.stop() == 0
    before = snapshot(pod.app.site_dir)
    pod.origin.stop()

    # The kubelet restarts the sidecar (or the node reboots the Pod's containers) mid-outage.
    again = pod.watch("--stale-after", "1.5", ready=False)
    wait_until(
        lambda: again.probe("/readyz")[0] == 200, timeout=20, what="ready on the published version"
    )
    wait_until(
        lambda: again.metric("config_fetcher_failures_total", stage="fetch") >= 1,
        timeout=20,
        what="a failed fetch",
    )
    status, ready = again.probe("/readyz")
    assert status == 200 and "source unreachable" in ready["detail"], ready
    assert again.metric("config_fetcher_source_up") == 0
    wait_until(lambda: again.metric("config_fetcher_stale") == 1, timeout=20, what="stale alert")
    assert again.metric("config_fetcher_last_success_age_seconds") > 1.5
    # Past --stale-after: liveness still passes (the loop keeps trying), content untouched.
    assert again.probe("/healthz")[0] == 200
    assert again.proc.popen.poll() is None
    assert snapshot(pod.app.site_dir) == before
    assert pod.get("/version") == (200, b"v1\n")
    # The origin comes back: the alert clears by itself, still nothing republished.
    pod.origin.start()
    wait_until(lambda: again.metric("config_fetcher_stale") == 0, timeout=20, what="fresh again")
    assert again.metric("config_fetcher_source_up") == 1
    assert again.metric("config_fetcher_fetches_total", result="published") == 0
    assert again.probe("/readyz")[1]["detail"].startswith("published ")


def test_without_a_published_version_it_is_not_ready(pod: PodLike) -> None:
    """Ready means a verified version is on the volume, not merely that the process runs."""
    pod.origin.stop()
    watch = pod.watch(ready=False)
    wait_until(
        lambda: watch.metric("config_fetcher_failures_total", stage="fetch") >= 2,
        timeout=20,
        what="failed fetches",
    )
    status, ready = watch.probe("/readyz")
    assert status == 503 and "starting" in ready["detail"], ready
    assert watch.probe("/healthz")[0] == 200, "failing attempts are progress of its own loop"


def test_liveness_fails_when_its_own_loop_is_stuck(tmp_path: Path) -> None:
    """A read that never returns stops the loop: that, and only that, fails /healthz once
    --stuck-after has passed. A FIFO stands in for a hung volume: as the fetcher's own state
    file in --dest (the source and the pid file are opened without blocking and refused when
    not regular files, so neither can hang it)."""
    source = tmp_path / "site.conf"
    source.write_text("v1\n")
    dest = tmp_path / "out"
    dest.mkdir()
    fifo = dest / STATE_NAME
    os.mkfifo(fifo)
    listen = free_port()
    proc = Proc(
        watch_cmd(
            str(source),
            str(dest),
            "--listen",
            f"127.0.0.1:{listen}",
            "--interval",
            "0.2",
            "--stale-after",
            "1",
            "--timeout",
            "0.5",
            "--reload-timeout",
            "0.5",
            "--stuck-after",
            "3",
        ),
        tmp_path / "fetcher.log",
    )
    try:
        health = f"http://127.0.0.1:{listen}/healthz"
        wait_until(lambda: http_get(health)[0] in (200, 503), timeout=20, what="health server up")
        _, body, _ = wait_until(
            lambda: (r := http_get(health))[0] == 503 and r, timeout=20, what="liveness failing"
        )
        assert b"no progress" in body
    finally:
        # Release the blocked read so the process can drain and exit (else stop() kills it).
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never blocks, never ENXIO
            os.unlink(fifo)
            os.close(fd)  # the reader sees EOF: an empty state file, set aside
        proc.stop()
