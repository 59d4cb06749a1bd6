"""Without a shared pid file (an unchanged nginx image keeps its own), the fetcher finds the
nginx master by its process title in the shared PID namespace."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from sidecars.config_fetcher.reload import ReloadError, find_master, signal_pidfile


def fake_proc(root: Path, processes: dict[int, bytes]) -> Path:
    for pid, cmdline in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
    (root / "self").mkdir()  # non-numeric entries are not processes
    return root


def test_signals_the_master_found_by_title_when_there_is_no_pid_file(tmp_path: Path) -> None:
    master = subprocess.Popen(["sleep", "60"])  # stands in for the master: SIGHUP ends it
    try:
        proc = fake_proc(
            tmp_path / "proc",
            {
                1: b"/pause\0",
                master.pid: b"nginx: master process nginx -g daemon off;\0",
                master.pid + 1: b"nginx: worker process\0",
            },
        )
        assert signal_pidfile(tmp_path / "absent.pid", proc=proc) == master.pid
        assert master.wait(timeout=10) == -signal.SIGHUP
    finally:
        master.kill()
        master.wait()


def test_no_master_and_several_masters_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ReloadError, match="no nginx master") as info:
        find_master(fake_proc(tmp_path / "a", {7: b"nginx: worker process\0"}))
    assert info.value.result == "no_target"
    with pytest.raises(ReloadError, match="several nginx masters"):
        find_master(
            fake_proc(
                tmp_path / "b", {7: b"nginx: master process\0", 9: b"nginx: master process\0"}
            )
        )


def test_a_bad_pid_file_is_not_bypassed(tmp_path: Path) -> None:
    # Only a missing pid file falls back to the scan; one holding garbage stays an error.
    (tmp_path / "n.pid").write_text("garbage\n")
    proc = fake_proc(tmp_path / "proc", {7: b"nginx: master process\0"})
    with pytest.raises(ReloadError, match="not a pid"):
        signal_pidfile(tmp_path / "n.pid", proc=proc)
