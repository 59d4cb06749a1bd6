"""Reading nginx's verdict on a reload: the error-log scan (outside input) and the worker check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.config_fetcher.reload_check import (
    LogScan,
    mark_log,
    read_appended,
    replaced,
    workers,
)

EMERG = b'2026/12/01 08:07:51 [emerg] 7#7: unknown directive "locatio" in /srv/site/conf.d/a:9\n'
WORKER_ERROR = (
    b'2026/12/01 08:07:52 [error] 9#9: *3 open() "/srv/site/html/raw/[emerg] x" failed '
    b'(2: No such file or directory), client: 127.0.0.1, request: "GET /raw/%5Bemerg%5D HTTP/1.1"\n'
)


def test_the_master_emerg_line_is_a_rejection() -> None:
    scan = LogScan(master_pid=7)
    scan.feed(WORKER_ERROR + EMERG)
    assert scan.rejections == ['[emerg] unknown directive "locatio" in /srv/site/conf.d/a:9']


def test_lines_of_other_processes_or_levels_are_not() -> None:
    scan = LogScan(master_pid=8)
    scan.feed(EMERG)  # another master (a second nginx logging into the same file)
    scan.feed(WORKER_ERROR)
    scan.feed(b"[emerg] 8#8: not at nginx's prefix\n")
    scan.feed(b"x 2026/12/01 08:07:51 [emerg] 8#8: prefix not at the line start\n")
    assert scan.rejections == []


def test_without_a_pid_any_emerg_counts_and_new_workers_are_seen() -> None:
    scan = LogScan(master_pid=None)
    scan.feed(b"2026/12/01 08:07:51 [notice] 7#7: start worker processes\n")
    assert scan.started_workers and scan.rejections == []
    scan.feed(EMERG)
    assert len(scan.rejections) == 1


def test_a_line_split_across_reads_is_joined() -> None:
    scan = LogScan(master_pid=7)
    scan.feed(EMERG[:30])
    assert scan.rejections == []
    scan.feed(EMERG[30:])
    assert len(scan.rejections) == 1


@settings(max_examples=200, deadline=None)
@given(
    noise=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
    with_emerg=st.booleans(),
)
def test_any_chunking_of_any_noise_finds_exactly_the_real_emerg(
    noise: list[bytes], cuts: list[int], with_emerg: bool
) -> None:
    """Whatever bytes requests put into the log, however reads cut them: the master's [emerg]
    is found once when present, and never invented. (Noise lines are written whole, one per
    line, as nginx writes them: a request cannot start a line of its own.)"""
    lines = [b"2026/12/01 08:07:52 [error] 9#9: " + n.replace(b"\n", b" ") + b"\n" for n in noise]
    if with_emerg:
        lines.insert(len(lines) // 2, EMERG)
    data = b"".join(lines)
    scan = LogScan(master_pid=7)
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        scan.feed(data[start:cut])
        start = max(start, cut)
    scan.feed(data[start:])
    assert len(scan.rejections) == (1 if with_emerg else 0)


def test_the_partial_line_is_bounded() -> None:
    scan = LogScan(master_pid=7)
    for _ in range(100):
        scan.feed(b"x" * 65536)  # 6.5 MB without a newline
    assert len(scan._partial) <= 4096


def test_read_appended_from_the_mark_and_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    assert mark_log(log) is None and mark_log(None) is None
    log.write_bytes(b"before\n")
    mark = mark_log(log)
    assert mark is not None
    with log.open("ab") as f:
        f.write(b"after-1\nafter-2\n")
    data, mark = read_appended(mark, 8)
    assert data == b"after-1\n"
    data, mark = read_appended(mark, 1000)
    assert data == b"after-2\n"
    # Rotated: the name now holds a new file, read from its start.
    os.rename(log, tmp_path / "error.log.1")
    log.write_bytes(b"fresh\n")
    assert read_appended(mark, 1000)[0] == b"fresh\n"
    # Truncated in place (copytruncate): from the start again.
    mark = mark_log(log)
    assert mark is not None
    log.write_bytes(b"")
    with log.open("ab") as f:
        f.write(b"t\n")
    assert read_appended(mark, 1000)[0] == b"t\n"


def test_replaced_needs_new_workers_and_the_old_ones_leaving() -> None:
    before = {10: False, 11: False}
    assert not replaced(before, before)
    assert not replaced(before, {10: False, 11: False, 12: False}), "a respawn is no reload"
    assert replaced(before, {10: True, 11: True, 12: False, 13: False})
    assert replaced(before, {12: False, 13: False})
    assert not replaced(before, {10: True, 11: True}), "no new worker"


def _fake_proc(root: Path, procs: dict[int, tuple[int, bytes]], children_files: bool) -> Path:
    for pid, (ppid, cmdline) in procs.items():
        d = root / str(pid)
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "cmdline").write_bytes(cmdline)
        (d / "stat").write_bytes(f"{pid} (ng) x) S {ppid} 1 1 0".encode())
        if children_files:
            kids = " ".join(str(p) for p, (pp, _) in procs.items() if pp == pid)
            (d / "task" / str(pid) / "children").write_text(kids)
    return root


def test_workers_from_children_files_or_a_scan(tmp_path: Path) -> None:
    procs = {
        7: (1, b"nginx: master process nginx\0"),
        8: (7, b"nginx: worker process\0"),
        9: (7, b"nginx: worker process is shutting down\0"),
        10: (7, b"nginx: cache manager process\0"),
        11: (1, b"nginx: worker process\0"),
    }
    expected = {8: False, 9: True}
    assert workers(7, _fake_proc(tmp_path / "a", procs, children_files=True)) == expected
    assert workers(7, _fake_proc(tmp_path / "b", procs, children_files=False)) == expected


def test_an_nginx_that_starts_no_new_workers_has_rejected_it(tmp_path: Path) -> None:
    """A master that takes the signal but never replaces its workers (here: one ignoring SIGHUP)
    is a rejection once --reload-timeout has passed, even with nothing in its error log."""
    from sidecars.config_fetcher.reload import reload_verified
    from tests.support.procs import wait_until

    script = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(60)"
    argv = ["bash", "-c", f'exec -a "nginx: master process" {sys.executable} -c "{script}"']
    proc = subprocess.Popen(argv)
    try:
        status = Path(f"/proc/{proc.pid}/status")
        # Ready once SIGHUP (bit 0 of the mask) is ignored: signalled earlier, it would die.
        wait_until(
            lambda: any(
                line.startswith("SigIgn:") and int(line.split()[1], 16) & 1
                for line in status.read_text().splitlines()
            ),
            what="SIGHUP ignored",
        )
        pidfile = tmp_path / "nginx.pid"
        pidfile.write_text(f"{proc.pid}\n")
        log = tmp_path / "error.log"
        log.write_bytes(b"")
        outcome = asyncio.run(
            reload_verified(
                pidfile=pidfile, webhook=None, error_log=log, http_timeout=1, verify_timeout=0.3
            )
        )
        assert outcome.result == "rejected" and "no new worker processes" in outcome.detail
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_an_error_log_swapped_for_a_fifo_is_not_waited_on(tmp_path: Path) -> None:
    """The error log lives on the logs volume nginx writes: a FIFO put in its place must not
    block the check (it runs under the publish lock: the whole loop would wait)."""
    import threading

    log = tmp_path / "error.log"
    log.write_bytes(b"before\n")
    mark = mark_log(log)
    assert mark is not None
    log.unlink()
    os.mkfifo(log)
    outcome: list[tuple[bytes, object]] = []
    reader = threading.Thread(target=lambda: outcome.append(read_appended(mark, 1000)))
    reader.daemon = True
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():
        fd = os.open(log, os.O_RDWR | os.O_NONBLOCK)
        os.close(fd)
        reader.join(timeout=5)
        raise AssertionError("reading a FIFO error log blocked")
    assert outcome == [(b"", mark)]
