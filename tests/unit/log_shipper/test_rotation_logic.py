"""Rotation names, retention choices, finding the nginx master in a /proc, Tailer.drop (pure or
on a temp dir)."""

from __future__ import annotations

import asyncio
import glob
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.retention import RotatedFile, held_bytes, over_cap, unacked
from sidecars.log_shipper.rotate import (
    lock_directories,
    rotated_name,
    rotated_patterns,
    rotation_of,
)
from sidecars.runtime.nginx_proc import NginxNotFound, find_master
from sidecars.runtime.tail import Tailer


def test_rotated_names_sort_by_time_and_parse_back() -> None:
    first = rotated_name("/l/access.log", 1_764_576_000.000001)
    later = rotated_name("/l/access.log", 1_764_576_000.5)
    assert first == "/l/access.log.20251201T080000.000001Z"
    assert first < later
    assert rotation_of(first) == ("/l/access.log", "20251201T080000.000001Z")
    assert rotation_of("/l/access.log") is None
    assert rotation_of("/l/access.log.1") is None
    assert rotated_patterns(["/l/*.log"]) == ["/l/*.log.[0-9]*Z"]


def _file(name: str, size: int, *acked: int) -> RotatedFile:
    return RotatedFile(name, size, "fp-" + name, acked, order=name)


def test_acknowledged_only_when_every_sink_has_all_of_it() -> None:
    assert _file("a", 10, 10, 12).acknowledged
    assert not _file("a", 10, 10, 9).acknowledged
    assert not RotatedFile("a", 10, None, (10,), "a").acknowledged
    assert unacked(10, (4, 7)) == 6 and unacked(10, ()) == 10


def test_over_cap_drops_oldest_first_until_under() -> None:
    files = [_file("3", 100, 0), _file("1", 100, 0), _file("2", 100, 0)]
    assert held_bytes(files, 50) == 350
    assert over_cap(files, 50, 0) == []  # no cap
    assert over_cap(files, 50, 350) == []
    assert [f.path for f in over_cap(files, 50, 349)] == ["1"]
    assert [f.path for f in over_cap(files, 50, 150)] == ["1", "2"]
    assert [f.path for f in over_cap(files, 500, 100)] == ["1", "2", "3"]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 10**6), max_size=20),
    live=st.integers(0, 10**6),
    cap=st.integers(1, 10**7),
)
def test_property_after_the_drops_held_is_under_the_cap_or_nothing_is_left(
    sizes: list[int], live: int, cap: int
) -> None:
    files = [_file(f"{i:03d}", size, 0) for i, size in enumerate(sizes)]
    drop = over_cap(files, live, cap)
    kept = [f for f in files if f not in drop]
    assert held_bytes(kept, live) <= cap or not kept
    assert drop == files[: len(drop)], "oldest first, no gaps"
    if drop:  # not one more than needed
        assert held_bytes([*kept, drop[-1]], live) > cap


# --- the nginx master in a /proc --------------------------------------------------------------


def fake_proc(root: Path, pids: dict[int, bytes], open_files: dict[int, list[Path]]) -> Path:
    for pid, cmdline in pids.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
        for index, target in enumerate(open_files.get(pid, [])):
            os.symlink(target, root / str(pid) / "fd" / str(index))
    (root / "self").mkdir()
    return root


MASTER = b"nginx: master process /usr/sbin/nginx -g daemon off;\x00"
WORKER = b"nginx: worker process\x00"


def test_find_master_by_the_log_it_holds(tmp_path: Path) -> None:
    log, other = tmp_path / "access.log", tmp_path / "other.log"
    log.write_text("x\n")
    other.write_text("y\n")
    proc = fake_proc(
        tmp_path / "proc",
        {10: MASTER, 11: WORKER, 20: MASTER, 30: b"sleep\x00120\x00"},
        {10: [other], 11: [log], 20: [log]},
    )
    info = log.stat()
    assert find_master(holding=(info.st_dev, info.st_ino), proc=proc) == 20
    with pytest.raises(NginxNotFound, match="2 nginx master"):
        find_master(proc=proc)  # two masters, nothing to choose by
    unrelated = tmp_path / "unrelated"
    unrelated.write_text("")
    u = unrelated.stat()
    with pytest.raises(NginxNotFound, match="has the log file open"):
        find_master(holding=(u.st_dev, u.st_ino), proc=proc)


def test_a_worker_just_forked_under_the_masters_title_is_not_a_second_master(
    tmp_path: Path,
) -> None:
    # Seen in a test run: "several nginx masters hold the log open: [22887, 22888]", a worker
    # nginx had forked and not yet renamed (it holds the same log fds).
    log = tmp_path / "error.log"
    log.write_text("x\n")
    pids, fds = {22887: MASTER, 22888: MASTER}, {22887: [log], 22888: [log]}
    proc = fake_proc(tmp_path / "proc", pids, fds)
    (proc / "22887" / "status").write_text("Name:\tnginx\nPPid:\t1\n")
    (proc / "22888" / "status").write_text("Name:\tnginx\nPPid:\t22887\n")
    info = log.stat()
    assert find_master(holding=(info.st_dev, info.st_ino), proc=proc) == 22887
    (proc / "22888" / "status").write_text("Name:\tnginx\nPPid:\t1\n")  # two real masters
    with pytest.raises(NginxNotFound, match="several nginx masters"):
        find_master(holding=(info.st_dev, info.st_ino), proc=proc)


def test_find_master_refuses_a_pid_file_naming_something_else(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {10: MASTER, 30: b"sleep\x00120\x00"}, {})
    pidfile = tmp_path / "nginx.pid"
    pidfile.write_text("30\n")
    with pytest.raises(NginxNotFound, match="not an nginx master"):
        find_master(pidfile=pidfile, proc=proc)
    pidfile.write_text("10\n")
    assert find_master(pidfile=pidfile, proc=proc) == 10
    log = tmp_path / "access.log"
    log.write_text("x\n")
    info = log.stat()
    with pytest.raises(NginxNotFound, match="does not have the log file open"):
        find_master(pidfile=pidfile, holding=(info.st_dev, info.st_ino), proc=proc)
    for junk in ("", "1", "abc", "-5"):
        pidfile.write_text(junk)
        with pytest.raises(NginxNotFound, match="not a pid"):
            find_master(pidfile=pidfile, proc=proc)
    with pytest.raises(NginxNotFound, match="does not exist"):
        find_master(pidfile=tmp_path / "missing.pid", proc=proc)
    empty = tmp_path / "empty-proc"
    empty.mkdir()
    with pytest.raises(NginxNotFound, match="shareProcessNamespace"):
        find_master(proc=empty)


# --- Tailer.drop ------------------------------------------------------------------------------


def test_tailer_drop_reports_the_unread_bytes_and_lets_go(tmp_path: Path) -> None:
    async def run() -> None:
        log = tmp_path / "a.log"
        log.write_bytes(b"first line\n" + b"x" * 100 + b"\n" + b"partial")
        tailer = Tailer([str(log)], watch=False, read_bytes=16)
        chunk = await tailer.__anext__()
        assert chunk.lines == [b"first line"]
        (view,) = tailer.files()
        assert view.fingerprint is not None
        # read 16 bytes: "first line\n" handed out, 5 bytes of the next line held
        assert tailer.drop(view.fingerprint) == log.stat().st_size - len(b"first line\n")
        assert tailer.files() == [] and tailer.drop(view.fingerprint) is None
        tailer.scan()  # the same content found again is not read again
        assert tailer.read_ready() is None
        await tailer.aclose()

    asyncio.run(run())


# --- settings ---------------------------------------------------------------------------------


def _settings(*argv: str, **env: str):
    from sidecars.log_shipper.settings import PART, Settings
    from sidecars.runtime.settings import load

    base = ["--state-file", "/tmp/s.json", "--sink", "stdout", *argv]
    return load(Settings, PART, base, env)


def test_rotation_settings() -> None:
    from sidecars.runtime.log_format_detect import AUTO
    from sidecars.runtime.settings import SettingsError

    default = _settings()
    assert (default.rotate_bytes, default.max_held_bytes, default.parser) == (0, 0, AUTO)
    on = _settings(LOG_SHIPPER_ROTATE_BYTES="64MiB", LOG_SHIPPER_MAX_HELD_BYTES="384MiB")
    assert (on.rotate_bytes, on.max_held_bytes) == (64 * 2**20, 384 * 2**20)
    assert _settings("--rotate-bytes", "off").rotate_bytes == 0
    with pytest.raises(SettingsError, match="--max-held-bytes needs --rotate-bytes"):
        _settings("--max-held-bytes", "1MiB")
    with pytest.raises(SettingsError, match="at least twice --rotate-bytes"):
        _settings("--rotate-bytes", "1MiB", "--max-held-bytes", "1MiB")
    assert _settings("--format", "none").parser is None
    assert _settings("--log-format", "$status").parser.fields == ("status",)


def test_signal_master_reaches_a_master_and_spares_a_stranger(tmp_path: Path) -> None:
    """signal_master checks the title of the process its pidfd pinned: a master gets the
    signal, a process that is not one (a reused pid) is left alone."""
    import signal
    import subprocess
    import sys

    from sidecars.runtime.nginx_proc import signal_master
    from tests.support.procs import wait_until

    got = tmp_path / "got"
    script = (
        "import pathlib, signal, time; "
        f"signal.signal(signal.SIGUSR1, lambda *a: pathlib.Path({str(got)!r}).touch()); "
        "time.sleep(60)"
    )
    titled = f'exec -a "nginx: master process" {sys.executable} -c "{script}"'
    master = subprocess.Popen(["bash", "-c", titled])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "nginx"])
    try:
        for cmdline in (Path(f"/proc/{p.pid}/cmdline") for p in (master, stranger)):
            wait_until(lambda c=cmdline: b"nginx" in c.read_bytes(), what="a command line")
        wait_until(
            lambda: any(
                line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << 9)
                for line in Path(f"/proc/{master.pid}/status").read_text().splitlines()
            ),
            what="USR1 handled",
        )
        signal_master(master.pid, signal.SIGUSR1)
        wait_until(got.exists, what="the master got USR1")
        with pytest.raises(NginxNotFound, match="not an nginx master"):
            signal_master(stranger.pid, signal.SIGUSR1)
        assert stranger.poll() is None
    finally:
        for p in (master, stranger):
            p.kill()
            p.wait()
    with pytest.raises(NginxNotFound, match="not running"):
        signal_master(stranger.pid, signal.SIGUSR1)


def test_the_turn_that_rotates_still_keeps_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the turn that renames the live file (nginx has not reopened yet), the older rotated
    files are no longer written by nginx and may be dropped past the cap; the file just
    renamed is counted once (as rotated), not also as the live file it was."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from sidecars.log_shipper import rotate
    from sidecars.log_shipper.metrics import ShipperMetrics

    live = tmp_path / "access.log"
    line = b"x" * 99 + b"\n"
    for index, when in enumerate((1_000_000.0, 1_000_100.0)):  # two older, unshipped rotations
        Path(rotated_name(str(live), when)).write_bytes(b"old %d " % index + line * 10)
    live.write_bytes(b"live " + line * 20)  # 2005 bytes: over --rotate-bytes
    proc = fake_proc(tmp_path / "proc", {10: MASTER}, {10: [live]})
    pidfile = tmp_path / "nginx.pid"
    pidfile.write_text("10\n")
    signalled: list[int] = []
    monkeypatch.setattr(rotate, "signal_master", lambda pid, sig, proc: signalled.append(pid))
    settings = SimpleNamespace(
        paths=[str(live)], rotate_bytes=1500, max_held_bytes=2500, nginx_pidfile=pidfile,
        rotate_wait=1.0,
    )  # fmt: skip
    tailer = SimpleNamespace(drop=lambda fingerprint: None, wake=lambda: None)
    pipelines = [SimpleNamespace(key="http", tailer=tailer)]
    metrics = ShipperMetrics(CollectorRegistry())
    rotator = rotate.Rotator(
        settings, SimpleNamespace(streams={}), lambda: pipelines, metrics, proc=proc
    )
    rotator.turn()
    assert signalled == [10] and not live.exists(), "rotated; nginx has not reopened yet"
    left = sorted(p.name for p in tmp_path.glob("access.log.*"))
    assert len(left) == 1, f"the older rotated files are dropped past the cap: {left}"
    held = metrics.held_bytes._value.get()
    assert held == 2005, f"the renamed file is counted once: {held}"


def test_a_fifo_as_the_pid_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """The pid file lives on a volume nginx's container writes: a FIFO planted there must not
    block the reader (the shipper's event loop, the fetcher's loop) until someone writes."""
    import threading

    pidfile = tmp_path / "nginx.pid"
    os.mkfifo(pidfile)
    outcome: list[BaseException | int] = []

    def attempt() -> None:
        try:
            outcome.append(find_master(pidfile=pidfile, proc=tmp_path))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # blocked in open(): release it, then fail
        fd = os.open(pidfile, os.O_RDWR | os.O_NONBLOCK)
        os.write(fd, b"1\n")
        reader.join(timeout=5)
        os.close(fd)
        pytest.fail("reading a FIFO pid file blocked")
    (error,) = outcome
    assert isinstance(error, NginxNotFound) and "not a regular file" in str(error)


def _rotator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signalled: list[int]) -> Any:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from sidecars.log_shipper import rotate
    from sidecars.log_shipper.metrics import ShipperMetrics

    tmp_path.mkdir(exist_ok=True)
    live = tmp_path / "access.log"
    live.write_bytes(b"live " + b"x" * 2000 + b"\n")  # over --rotate-bytes
    proc = fake_proc(tmp_path / "proc", {10: MASTER}, {})
    pidfile = tmp_path / "nginx.pid"
    pidfile.write_text("10\n")
    monkeypatch.setattr(rotate, "signal_master", lambda pid, sig, proc: signalled.append(pid))
    monkeypatch.setattr(rotate, "find_master", lambda **how: 10)  # found: not what is tested
    settings = SimpleNamespace(
        paths=[glob.escape(str(live))], rotate_bytes=1500, max_held_bytes=0, nginx_pidfile=pidfile,
        rotate_wait=1.0,
    )  # fmt: skip
    tailer = SimpleNamespace(drop=lambda fingerprint: None, wake=lambda: None)
    pipelines = [SimpleNamespace(key="http", tailer=tailer)]
    metrics = ShipperMetrics(CollectorRegistry())
    return rotate.Rotator(
        settings, SimpleNamespace(streams={}), lambda: pipelines, metrics, proc=proc
    )


def test_a_full_logs_volume_keeps_the_log_in_place_says_so_and_rotates_once_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from sidecars.log_shipper import rotate

    signalled: list[int] = []
    rotator = _rotator(tmp_path, monkeypatch, signalled)
    live = tmp_path / "access.log"
    real_rename = os.rename
    full = True

    def rename(src: str, dst: str) -> None:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(rotate.os, "rename", rename)
    for _ in range(3):
        rotator.turn()
        rotator._rotated_at.clear()  # no pause between attempts in this test
    assert live.exists() and not list(tmp_path.glob("access.log.*")), "left in place, whole"
    assert signalled == [], "nginx is not told to reopen a file that was not renamed"
    warnings = [r.message for r in caplog.records if "cannot rotate" in r.message]
    assert warnings == [
        "cannot rotate: renaming the log failed (the logs volume is full: a new directory entry "
        "needs space); retried, nothing is lost meanwhile (the file grows on)"
    ]
    full = False
    rotator.turn()
    assert signalled == [10] and not live.exists() and len(list(tmp_path.glob("access.log.*")))


@pytest.mark.parametrize("directory", ["logs", "[site] logs"])
def test_a_reopen_nginx_could_not_do_is_asked_for_again_until_the_live_name_is_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    directory: str,
) -> None:
    """nginx cannot reopen its log on a full (or read-only) volume and never retries by itself:
    without a new USR1 it writes to the rotated file forever. (A '[' in the log's directory,
    given escaped in --paths, was read as a glob when looking for the rotated file to ask
    about, so nginx was never asked again.)"""
    from sidecars.log_shipper import rotate

    monkeypatch.setattr(rotate, "_REOPEN_WARN_AFTER", 0.0)
    signalled: list[int] = []
    tmp_path = tmp_path / directory
    rotator = _rotator(tmp_path, monkeypatch, signalled)
    live = tmp_path / "access.log"
    rotator.turn()
    assert signalled == [10] and not live.exists()
    rotator.turn()  # the live name is not back: asked again
    rotator.turn()
    assert signalled == [10, 10, 10]
    assert sum("did not reopen" in r.message for r in caplog.records) == 1, "logged once"
    live.write_bytes(b"reopened\n")  # nginx could reopen at last
    rotator.turn()
    rotator.turn()
    assert signalled == [10, 10, 10]


def test_lock_directories_cover_what_a_directory_glob_matches(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "c.log").write_text("")  # a file: no lock goes in it
    assert lock_directories([str(tmp_path / "*" / "access.log")]) == sorted(
        [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "b")]
    )
    assert lock_directories([str(tmp_path / "a" / "*.log")]) == [str(tmp_path / "a")]
