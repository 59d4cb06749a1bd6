"""One rotating log-shipper per logs directory, enforced: a second one that would rotate (and
delete rotated files once *its* sinks have them) stops at start naming the first."""

from __future__ import annotations

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
