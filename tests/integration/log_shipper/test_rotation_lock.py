"""One rotating log-shipper per logs directory, enforced: a second one that would rotate (and
delete rotated files once *its* sinks have them) stops at start naming the first."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.integration.log_shipper.shipper import REPO, Shipper
from tests.support.procs import Proc, free_port, http_get, sidecars_cmd, wait_until
from tests.support.tmpfs import remount, tmpfs

pytestmark = pytest.mark.integration


def rotating(root: Path, logs: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    return sidecars_cmd(
        "log-shipper",
        "--listen", f"127.0.0.1:{free_port()}",
        "--state-file", str(root / "state.json"),
        "--paths", str(logs / "access.log"),
        "--paths", str(logs / "error.log"),
        "--sink", "stdout",
        "--rotate-bytes", "1MiB",
    )  # fmt: skip


def test_a_second_rotating_shipper_on_the_same_logs_stops_at_start(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_text("a line\n")
    first = Shipper(
        tmp_path / "first",
        "--paths", str(logs / "access.log"),
        "--sink", "stdout",
        "--rotate-bytes", "1MiB",
    )  # fmt: skip
    shippers.append(first.start())
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{first.port}/readyz")[0] == 200,
        what="the first shipper ready",
    )
    second = Proc(rotating(tmp_path / "second", logs), tmp_path / "second.out", cwd=REPO)
    try:
        assert second.wait(timeout=30) == 2
    finally:
        second.stop()
    out = second.output()
    assert "another log-shipper already rotates the logs in" in out, out
    assert f"pid {first.proc.pid}" in out, out  # type: ignore[union-attr]
    assert first.proc.popen.poll() is None  # type: ignore[union-attr]
    # Not rotating, a second shipper is fine (it deletes nothing).
    reader = Shipper(tmp_path / "reader", "--paths", str(logs / "access.log"), "--sink", "stdout")
    shippers.append(reader.start())
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{reader.port}/readyz")[0] == 200,
        what="a non-rotating shipper ready",
    )
    # The lock dies with its holder, also by SIGKILL: no stale lock blocks the restart.
    first.kill()
    again = Proc(rotating(tmp_path / "again", logs), tmp_path / "again.out", cwd=REPO)
    try:
        wait_until(lambda: "shipping" in again.output(), what="the restarted shipper shipping")
        assert again.popen.poll() is None, again.output()
    finally:
        again.stop()


def test_a_read_only_logs_directory_is_refused_at_start_when_rotating(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "logs", "1m") as logs:
        (logs / "access.log").write_text("a line\n")
        remount(logs, "ro")
        proc = Proc(rotating(tmp_path / "ro", logs), tmp_path / "ro.out", cwd=REPO)
        try:
            assert proc.wait(timeout=30) == 2
        finally:
            proc.stop()
        out = proc.output()
        assert "cannot create the rotation lock" in out and "read-write" in out, out


@pytest.mark.parametrize("first_glob", [True, False], ids=["glob-first", "name-first"])
def test_overlapping_globs_through_a_directory_glob_are_one_logs_directory(
    tmp_path: Path, shippers: list[Shipper], first_glob: bool
) -> None:
    """``logs/*/access.log`` and ``logs/a/access.log`` rotate the same file. The lock was taken
    in the glob's fixed root only (``logs/`` for one, ``logs/a/`` for the other), so both ran
    and each deleted rotated files once its own sinks had them."""
    logs = tmp_path / "logs"
    (logs / "a").mkdir(parents=True)
    (logs / "a" / "access.log").write_text("a line\n")
    by_glob = ["--paths", str(logs / "*" / "access.log")]
    by_name = ["--paths", str(logs / "a" / "access.log")]
    first = Shipper(
        tmp_path / "first", *(by_glob if first_glob else by_name),
        "--sink", "stdout", "--rotate-bytes", "1MiB",
    )  # fmt: skip
    shippers.append(first.start())
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{first.port}/readyz")[0] == 200,
        what="the first shipper ready",
    )
    second = Shipper(
        tmp_path / "second", *(by_name if first_glob else by_glob),
        "--sink", "stdout", "--rotate-bytes", "1MiB",
    )  # fmt: skip
    cmd = sidecars_cmd(
        "log-shipper", "--listen", f"127.0.0.1:{second.port}",
        "--state-file", str(tmp_path / "second.json"), *second.args,
    )  # fmt: skip
    proc = Proc(cmd, tmp_path / "second.out", cwd=REPO)
    try:
        assert proc.wait(timeout=20) == 2, proc.output()
    finally:
        proc.stop()
    assert "another log-shipper already rotates the logs in" in proc.output()
    assert str(logs / "a") in proc.output()


def test_a_lock_file_deleted_or_replaced_while_held_is_taken_back(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    """The lock is the flock on one inode: once its name is deleted (a cleanup of old files in
    the logs volume), a second shipper created a new file, locked it and rotated beside the
    first. The holder now puts its lock back under the name; one that finds the name held by
    another process stops rotating there (and says so) rather than rotate beside it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_text("a line\n")
    lock = logs / ".log-shipper-rotation.lock"
    first = Shipper(
        tmp_path / "first",
        "--paths", str(logs / "access.log"),
        "--sink", "stdout",
        "--rotate-bytes", "4KiB",
    )  # fmt: skip
    shippers.append(first.start())
    wait_until(lock.exists, what="the lock taken")
    lock.unlink()
    wait_until(lock.exists, timeout=10, what="the lock put back under its name")
    second = Proc(rotating(tmp_path / "second", logs), tmp_path / "second.out", cwd=REPO)
    try:
        assert second.wait(timeout=20) == 2, second.output()
    finally:
        second.stop()
    assert "another log-shipper already rotates the logs in" in second.output()
    # Replaced by a file another process holds: the first stops rotating and says why.
    lock.unlink()
    other = tmp_path / "other.lock"
    fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.rename(lock)
        wait_until(
            lambda: "rotation lock lost" in (out := first.output()) and "another log-" in out,
            timeout=10,
            what="the first shipper giving up rotating",
        )
        with (logs / "access.log").open("a") as f:
            f.write("x" * 100 + "\n" + ("y" * 99 + "\n") * 80)
        # Not rotated meanwhile (a rotation would be logged within CHECK_INTERVAL of the size).
        with pytest.raises(AssertionError):
            wait_until(lambda: '"msg": "rotated"' in first.output(), timeout=2, what="rotation")
    finally:
        os.close(fd)
    assert first.proc.popen.poll() is None  # type: ignore[union-attr]
