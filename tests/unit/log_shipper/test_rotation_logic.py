"""Rotation names, retention choices, finding the nginx master in a /proc, Tailer.drop (pure or
on a temp dir)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.retention import RotatedFile, held_bytes, over_cap, unacked
from sidecars.log_shipper.rotate import rotated_name, rotated_patterns, rotation_of
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
    with pytest.raises(NginxNotFound, match="cannot read"):
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
