"""Without a shared pid file (an unchanged nginx image keeps its own), the fetcher finds the
nginx master in the shared PID namespace: the one with nginx's title holding the error log open,
so another nginx on the same host (a node-wide PID namespace, a test machine) is never taken."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from sidecars.config_fetcher.reload import (
    ReloadError,
    master_by_log,
    nginx_started_at,
    signal_pidfile,
)


def fake_proc(root: Path, processes: dict[int, bytes], holding: dict[int, Path] | None = None):
    for pid, cmdline in processes.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
    for pid, path in (holding or {}).items():
        (root / str(pid) / "fd" / "3").symlink_to(path)
    (root / "self").mkdir()  # non-numeric entries are not processes
    return root


def test_signals_the_master_holding_the_log_when_there_is_no_pid_file(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    other = tmp_path / "other.log"
    other.write_text("")
    master = subprocess.Popen(["sleep", "60"])  # stands in for the master: SIGHUP ends it
    try:
        proc = fake_proc(
            tmp_path / "proc",
            {
                1: b"/pause\0",
                master.pid: b"nginx: master process nginx -g daemon off;\0",
                master.pid + 1: b"nginx: worker process\0",
                master.pid + 2: b"nginx: master process (another Pod's)\0",
            },
            {master.pid: log, master.pid + 2: other},
        )
        assert signal_pidfile(tmp_path / "absent.pid", proc=proc, error_log=log) == master.pid
        assert master.wait(timeout=10) == -signal.SIGHUP
    finally:
        master.kill()
        master.wait()


def test_no_master_of_ours_is_no_target(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    with pytest.raises(ReloadError, match="does not exist yet") as info:
        master_by_log(log, fake_proc(tmp_path / "a", {7: b"nginx: master process\0"}))
    assert info.value.result == "no_target"
    log.write_text("")
    other = tmp_path / "other.log"
    other.write_text("")
    proc = fake_proc(
        tmp_path / "b",
        {7: b"nginx: master process\0", 9: b"nginx: master process\0"},
        {7: other, 9: other},
    )
    with pytest.raises(ReloadError, match="no pid file") as info:
        master_by_log(log, proc)
    assert info.value.result == "no_target"
    with pytest.raises(ReloadError, match="no --nginx-error-log"):
        master_by_log(None, proc)


def test_a_bad_pid_file_is_not_bypassed(tmp_path: Path) -> None:
    # Only a missing pid file falls back to the scan; one holding garbage stays an error.
    (tmp_path / "n.pid").write_text("garbage\n")
    log = tmp_path / "error.log"
    log.write_text("")
    proc = fake_proc(tmp_path / "proc", {7: b"nginx: master process\0"}, {7: log})
    with pytest.raises(ReloadError, match="not a pid"):
        signal_pidfile(tmp_path / "n.pid", proc=proc, error_log=log)


def test_without_a_pid_file_nginx_started_when_its_master_did(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text("")
    proc = fake_proc(tmp_path / "proc", {7: b"nginx: master process\0"}, {7: log})
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", *["0"] * 18, str(50 * ticks), "0"]  # starttime: 50 s after boot
    (proc / "7" / "stat").write_text(f"7 (nginx) {' '.join(fields)}\n")
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    assert nginx_started_at(tmp_path / "absent.pid", proc=proc, error_log=log) == 1700000050.0
    assert nginx_started_at(tmp_path / "absent.pid", proc=proc, error_log=None) is None
