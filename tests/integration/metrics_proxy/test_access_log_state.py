"""Where counting starts when the proxy starts after nginx (classic Pods start sidecars in no
order) or restarts: with ``--state-file`` nothing is missed and nothing counted twice."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy
from tests.integration.metrics_proxy.test_access_log import send, start, wait_for
from tests.support.procs import wait_until
from tests.support.tmpfs import fill, tmpfs

pytestmark = pytest.mark.integration


def saved_offsets(state: Path) -> list[int]:
    try:
        return sorted(json.loads(state.read_text())["data"]["files"].values())
    except (OSError, ValueError, KeyError):
        return []


def test_requests_served_before_the_proxy_started_are_counted(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    send(nginx, "/", 4)
    wait_until(lambda: nginx.access_log.stat().st_size > 0, what="history in the access log")
    proxy = start(proxies, nginx, "--state-file", str(tmp_path / "positions.json"))
    send(nginx, "/missing", 2)
    wait_for(proxy, {("200", "GET"): 4, ("404", "GET"): 2})


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restart_neither_counts_again_nor_misses(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path, how: str
) -> None:
    state = tmp_path / "positions.json"
    first = start(proxies, nginx, "--state-file", str(state))
    send(nginx, "/", 5)
    wait_for(first, {("200", "GET"): 5})
    if how == "sigkill":
        # A crash loses what the last save (about every second) did not hold: wait for it.
        size = nginx.access_log.stat().st_size
        wait_until(lambda: saved_offsets(state) == [size], what="the position saved")
        first.proc.signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    else:
        assert first.stop() == 0
    send(nginx, "/missing", 3)  # served while no proxy runs
    second = start(proxies, nginx, "--state-file", str(state))
    # A new process starts its counters at 0 (a counter reset, as Prometheus expects): it
    # counts the 3 requests it missed, not the 5 its predecessor counted.
    wait_for(second, {("404", "GET"): 3})
    send(nginx, "/", 1)
    wait_for(second, {("200", "GET"): 1, ("404", "GET"): 3})
    assert second.stop() == 0
    assert saved_offsets(state) == [nginx.access_log.stat().st_size]


def test_an_unusable_state_file_is_set_aside_and_the_log_counted_from_its_start(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    state = tmp_path / "positions.json"
    state.write_text('{"kind": "sidecars.metrics-proxy", "vers')  # torn by hand
    send(nginx, "/", 2)
    wait_until(lambda: nginx.access_log.stat().st_size > 0, what="history in the access log")
    proxy = start(proxies, nginx, "--state-file", str(state))
    wait_for(proxy, {("200", "GET"): 2})
    assert "state file unusable" in proxy.proc.output()
    assert list(tmp_path.glob("positions.json.corrupt-*"))


def test_a_state_file_in_a_missing_directory_is_a_settings_error(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--access-log",
        str(nginx.access_log),
        "--state-file",
        str(tmp_path / "absent" / "positions.json"),
    )
    assert proxy.proc.wait(timeout=15) == 2
    assert "--state-file" in proxy.proc.output()


def test_a_full_state_volume_keeps_counting_and_the_last_file_whole(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    """ENOSPC on the positions file: counting goes on (the metrics do not depend on it), the
    previous file stays whole, no temp file is left, the error is logged once, and the
    positions are saved again once there is room."""
    with tmpfs(tmp_path / "state", "64k") as state_dir:
        state = state_dir / "positions.json"
        proxy = start(proxies, nginx, "--state-file", str(state))
        send(nginx, "/", 3)
        wait_for(proxy, {("200", "GET"): 3})
        size = nginx.access_log.stat().st_size
        wait_until(lambda: saved_offsets(state) == [size], what="the position saved")
        filler = fill(state_dir)
        before = state.read_bytes()
        send(nginx, "/missing", 2)
        wait_for(proxy, {("200", "GET"): 3, ("404", "GET"): 2})
        wait_until(
            lambda: "cannot write state file" in proxy.proc.output(), what="the failure logged"
        )
        fill(state_dir)  # what a failed write freed
        send(nginx, "/missing", 1)
        wait_for(proxy, {("200", "GET"): 3, ("404", "GET"): 3})
        assert state.read_bytes() == before
        assert sorted(p.name for p in state_dir.iterdir()) == ["filler", "positions.json"]
        assert proxy.proc.output().count("cannot write state file") == 1
        filler.unlink()
        size = nginx.access_log.stat().st_size
        wait_until(lambda: saved_offsets(state) == [size], what="the position saved again")
        assert "state file writable again" in proxy.proc.output()
        assert proxy.stop() == 0
