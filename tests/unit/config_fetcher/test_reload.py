from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from sidecars.config_fetcher.reload import Debouncer, ReloadError, read_pid, signal_pidfile
from tests.support.procs import wait_until


async def test_a_burst_gives_one_action() -> None:
    calls: list[float] = []
    done = asyncio.Event()

    async def action() -> None:
        calls.append(asyncio.get_running_loop().time())
        done.set()

    debouncer = Debouncer(action, delay=0.05)
    runner = asyncio.create_task(debouncer.run())
    try:
        for _ in range(20):
            debouncer.trigger()
        await asyncio.wait_for(done.wait(), timeout=5)
        assert len(calls) == 1
        assert not debouncer.pending
    finally:
        runner.cancel()


async def test_flush_runs_pending_action_now() -> None:
    calls = []

    async def action() -> None:
        calls.append(1)

    debouncer = Debouncer(action, delay=3600)
    debouncer.trigger()
    await debouncer.flush()
    assert calls == [1]
    await debouncer.flush()
    assert calls == [1]


def test_pidfile_errors(tmp_path: Path) -> None:
    with pytest.raises(ReloadError, match="does not exist") as info:
        read_pid(tmp_path / "missing.pid")
    assert info.value.result == "no_target"
    (tmp_path / "bad.pid").write_text("nginx\n")
    with pytest.raises(ReloadError, match="not a pid"):
        read_pid(tmp_path / "bad.pid")


def test_refuses_to_signal_a_process_that_is_not_nginx(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "n.pid").write_text(f"{proc.pid}\n")
        with pytest.raises(ReloadError, match="not an nginx master"):
            signal_pidfile(tmp_path / "n.pid")
        assert proc.poll() is None, "the unrelated process must not have been signalled"
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ReloadError, match="is not running") as info:
        signal_pidfile(tmp_path / "n.pid")
    assert info.value.result == "no_target"


def test_source_events_exclude_our_own_publishes(tmp_path: Path) -> None:
    from sidecars.config_fetcher.main import source_event_filter

    src = tmp_path / "site.conf"
    relevant = source_event_filter(src, False, tmp_path / "out")
    assert relevant(None, str(src))
    assert relevant(None, str(tmp_path / "..data")), "a ConfigMap swap beside the file"
    assert not relevant(None, str(tmp_path / "other.conf"))
    assert not relevant(None, str(tmp_path / "out" / "..data"))
    tree = source_event_filter(tmp_path, True, tmp_path / "out")
    assert tree(None, str(tmp_path / "conf.d" / "a.conf"))
    assert not tree(None, str(tmp_path / "out" / "..2026" / "a.conf"))
    assert not tree(None, str(tmp_path / "out"))


def test_refuses_to_signal_a_process_that_only_mentions_nginx(tmp_path: Path) -> None:
    """A stale pid file whose pid was reused by another sidecar of the Pod (the log-shipper's
    command line names /var/log/nginx and --nginx-pidfile): SIGHUP would kill that process.
    Only a process titled "nginx: master process" is nginx's master."""
    code = "import time; time.sleep(60)"
    stranger = subprocess.Popen(
        [sys.executable, "-c", code, "--nginx-pidfile=/run/nginx.pid", "/var/log/nginx/a.log"]
    )
    try:
        cmdline = Path(f"/proc/{stranger.pid}/cmdline")
        wait_until(lambda: b"nginx" in cmdline.read_bytes(), what="the stranger's command line")
        (tmp_path / "n.pid").write_text(f"{stranger.pid}\n")
        with pytest.raises(ReloadError, match="not an nginx master"):
            signal_pidfile(tmp_path / "n.pid")
        with contextlib.suppress(subprocess.TimeoutExpired):
            stranger.wait(timeout=0.5)
        assert stranger.poll() is None, "a process that is not nginx's master was signalled"
    finally:
        stranger.kill()
        stranger.wait()
