"""Finding the nginx master that writes the tailed logs, on a /proc laid out in a temp dir.

What can mislead it, each answered here: another nginx master (another Pod on a host PID
namespace, another test), a process whose descriptors cannot be read, a zombie (empty command
line), a pid reused by something else, a /proc that cannot be listed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.runtime import nginx_exit as writer
from sidecars.runtime.nginx_proc import MASTER_TITLE


def make_proc(root: Path, pid: int, cmdline: bytes, files: list[Path] | None = None) -> Path:
    entry = root / str(pid)
    (entry / "fd").mkdir(parents=True)
    (entry / "cmdline").write_bytes(cmdline)
    for number, target in enumerate(files or []):
        os.symlink(target, entry / "fd" / str(number))
    return entry


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    (directory / "access.log").write_text("x\n")
    (directory / "error.log").write_text("y\n")
    return directory


def test_only_the_master_holding_our_logs_is_a_writer(tmp_path: Path, logs: Path) -> None:
    proc = tmp_path / "proc"
    other = tmp_path / "other.log"
    other.write_text("z\n")
    make_proc(proc, 10, b"nginx: master process nginx -g daemon off;\0", [logs / "error.log"])
    make_proc(proc, 11, b"nginx: worker process\0", [logs / "access.log"])
    make_proc(proc, 12, b"nginx: master process /usr/sbin/nginx\0", [other])
    make_proc(proc, 13, b"python3\0-m\0sidecars\0", [logs / "access.log"])
    (proc / "self").mkdir()
    assert writer.masters(proc) == [10, 12]
    assert writer.writers([str(logs / "*.log")], proc) == [10]
    assert writer.writers(None, proc) == [10, 12]


def test_a_master_whose_descriptors_cannot_be_read_counts(tmp_path: Path, logs: Path) -> None:
    proc = tmp_path / "proc"
    entry = make_proc(proc, 20, b"nginx: master process nginx\0")
    os.rmdir(entry / "fd")  # as /proc/PID/fd of another user's process: not listable
    assert writer.writers([str(logs / "access.log")], proc) == [20]


def test_watch_waits_until_the_master_has_exited(tmp_path: Path, logs: Path) -> None:
    proc = tmp_path / "proc"
    entry = make_proc(proc, 30, b"nginx: master process nginx\0", [logs / "access.log"])
    watch = writer.WriterWatch([str(logs / "access.log")], proc)
    assert not watch.gone() and watch.pids == [30]
    (entry / "cmdline").write_bytes(b"")  # a zombie: exited, not reaped yet
    assert watch.gone()
    assert watch.gone()  # stays gone, even if the pid is reused by another nginx
    (entry / "cmdline").write_bytes(b"nginx: master process nginx\0")
    assert watch.gone()


def test_a_reused_pid_is_not_the_master(tmp_path: Path, logs: Path) -> None:
    proc = tmp_path / "proc"
    entry = make_proc(proc, 40, b"nginx: master process nginx\0", [logs / "access.log"])
    watch = writer.WriterWatch([str(logs / "access.log")], proc)
    assert not watch.gone()
    (entry / "cmdline").write_bytes(b"sleep\x00100\x00")
    assert watch.gone()


def test_no_visible_master_means_the_end_is_final(tmp_path: Path, logs: Path) -> None:
    assert writer.WriterWatch([str(logs / "access.log")], tmp_path / "no-proc").gone()
    assert writer.wait(None, 0.0, tmp_path / "no-proc")
    proc = tmp_path / "proc"
    make_proc(proc, 50, b"nginx: master process nginx\0", [logs / "access.log"])
    assert not writer.wait(None, 0.2, proc)  # still running at the timeout
    assert writer.main(["--wait", "--timeout", "0"]) == 0  # a preStop hook never fails


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_command_line_is_a_master_only_with_nginx_s_prefix(cmdline: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        proc = Path(root)
        make_proc(proc, 7, cmdline)
        assert writer.is_master(7, proc) == cmdline.startswith(b"nginx: master process")
        assert writer.masters(proc) == ([7] if cmdline.startswith(MASTER_TITLE) else [])
