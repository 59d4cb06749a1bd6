"""Tailer against real files: rotation, copytruncate, copies, deletion, notifications."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import pytest

from sidecars.runtime.tail import Chunk, Tailer


class Collector:
    """Pulls chunks from a tailer into per-file line lists."""

    def __init__(self, tailer: Tailer) -> None:
        self.tailer = tailer
        self.chunks: list[Chunk] = []

    def lines(self) -> list[bytes]:
        return [line for chunk in self.chunks for line in chunk.lines]

    async def until(self, count: int, wait: float = 5.0) -> list[bytes]:
        async def pull() -> None:
            while len(self.lines()) < count:
                self.chunks.append(await self.tailer.__anext__())

        await asyncio.wait_for(pull(), wait)
        return self.lines()

    async def idle_until(self, predicate, wait: float = 5.0) -> None:
        """Keep the tailer scanning (as a consumer would) until ``predicate()`` holds."""
        while not predicate():
            with contextlib.suppress(TimeoutError):
                self.chunks.append(await asyncio.wait_for(self.tailer.__anext__(), 0.05))
            wait -= 0.05
            assert wait > 0, "condition not reached"

    async def quiet(self, seconds: float = 0.3) -> None:
        """Assert nothing more arrives for a while (used only to prove an absence)."""
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.tailer.__anext__(), seconds)


def write(path: Path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as handle:
        handle.write(data)


def numbered(prefix: str, start: int, stop: int) -> bytes:
    return b"".join(f"{prefix} line {i}\n".encode() for i in range(start, stop))


@pytest.fixture
async def tail_factory():
    made: list[Tailer] = []

    def make(*patterns: str, **kwargs: object) -> Collector:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("rotate_wait", 0.2)
        tailer = Tailer(list(patterns), **kwargs)  # type: ignore[arg-type]
        made.append(tailer)
        return Collector(tailer)

    yield make
    for tailer in made:
        await tailer.aclose()


async def test_reads_existing_then_appended_lines_and_holds_partial(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("a", 0, 3) + b"partial")
    tail = tail_factory(str(tmp_path / "*.log"))
    assert await tail.until(3) == [b"a line 0", b"a line 1", b"a line 2"]
    await tail.quiet()
    write(log, b" done\n")
    lines = await tail.until(4)
    assert lines[3] == b"partial done"
    assert tail.chunks[-1].bounds[-1] == log.stat().st_size


async def test_read_ready_drains_a_backlog_without_waiting_then_says_none(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("a", 0, 5000))
    tail = tail_factory(str(log), read_bytes=4096)
    chunks = []
    while (chunk := tail.tailer.read_ready()) is not None:
        chunks.append(chunk)
    assert len(chunks) > 10, "read in read_bytes pieces"
    assert [line for c in chunks for line in c.lines] == numbered("a", 0, 5000).splitlines()
    assert chunks[-1].bounds[-1] == log.stat().st_size
    write(log, numbered("b", 0, 1))
    assert tail.tailer.read_ready() is not None  # the file is read again as it grows
    await tail.tailer.aclose()
    write(log, numbered("c", 0, 1))
    assert tail.tailer.read_ready() is None


async def test_start_at_end_skips_existing_content(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("old", 0, 5) + b"half")
    tail = tail_factory(str(log), start_at="end")
    await tail.quiet()
    write(log, b" of it\n" + numbered("new", 0, 2))
    assert await tail.until(2) == [b"new line 0", b"new line 1"]


async def test_start_at_end_is_the_end_at_start_not_when_the_first_line_arrives(
    tmp_path, tail_factory
):
    """ "end" means the file's size when the tailer first saw it: a log that was empty (or held
    only a partial line) then is read from there, although its identity settles only with its
    first complete line, later."""
    empty, partial = tmp_path / "empty.log", tmp_path / "partial.log"
    write(empty, b"")
    write(partial, b"half a li")
    tail = tail_factory(str(tmp_path / "*.log"), start_at="end")
    tail.tailer.scan()
    write(empty, numbered("e", 0, 3))
    write(partial, b"ne\n" + numbered("p", 0, 2))
    lines = await tail.until(5)
    assert sorted(lines) == sorted(
        numbered("e", 0, 3).splitlines() + numbered("p", 0, 2).splitlines()
    )


async def test_positions_resume_where_a_checkpoint_says(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    content = numbered("a", 0, 10)
    write(log, content)
    first = tail_factory(str(log))
    await first.until(10)
    fingerprint = first.chunks[0].fingerprint
    offset = first.chunks[0].bounds[0] + len(numbered("a", 0, 4))
    second = tail_factory(str(log), positions={fingerprint: offset})
    assert await second.until(6) == [f"a line {i}".encode() for i in range(4, 10)]


async def test_rename_rotation_reads_old_to_end_then_new_from_zero(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("one", 0, 3))
    tail = tail_factory(str(log))
    await tail.until(3)
    os.rename(log, tmp_path / "access.log.1")
    write(tmp_path / "access.log.1", numbered("one", 3, 5))  # writer still has the old fd
    write(log, numbered("two", 0, 2))
    lines = await tail.until(7)
    assert sorted(lines) == sorted(
        [f"one line {i}".encode() for i in range(5)] + [b"two line 0", b"two line 1"]
    )
    assert [line for line in lines if line.startswith(b"one")] == [
        f"one line {i}".encode() for i in range(5)
    ]
    # the renamed file leaves the glob, goes quiet and is released
    await tail.idle_until(lambda: tail.tailer.stats.files_released == 1)
    assert [view.path for view in tail.tailer.files()] == [str(log)]


async def test_copytruncate_copy_is_not_read_again_and_truncation_restarts(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("old", 0, 4))
    tail = tail_factory(str(tmp_path / "access.log*"))
    await tail.until(4)
    write(log, numbered("old", 4, 6))  # written before the copy, maybe not read yet
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    write(log, numbered("new", 0, 3))
    lines = await tail.until(9)
    await tail.quiet()
    assert sorted(lines) == sorted(
        [f"old line {i}".encode() for i in range(6)] + [f"new line {i}".encode() for i in range(3)]
    )
    assert tail.tailer.stats.truncations >= 1


async def test_truncation_regrown_past_position_is_detected(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("first", 0, 3))
    tail = tail_factory(str(log), poll_interval=30.0, watch=False)
    await tail.until(3)
    # truncate and write more than was read before, with no scan in between
    write(log, numbered("second", 0, 10), mode="wb")
    lines = await tail.until(13)
    assert lines[3:] == [f"second line {i}".encode() for i in range(10)]


async def test_deleted_file_is_read_to_end_and_released(tmp_path, tail_factory):
    log = tmp_path / "error.log"
    write(log, numbered("e", 0, 2))
    tail = tail_factory(str(log))
    await tail.until(2)
    handle = open(log, "ab")  # noqa: SIM115, ASYNC230 - a writer keeps it open across the delete
    try:
        os.unlink(log)
        handle.write(numbered("e", 2, 4))
        handle.flush()
        assert (await tail.until(4))[2:] == [b"e line 2", b"e line 3"]
    finally:
        handle.close()
    await tail.idle_until(lambda: tail.tailer.stats.files_released == 1)
    assert tail.tailer.files() == []


async def test_new_files_noticed_by_notification_without_polling(tmp_path, tail_factory):
    tail = tail_factory(str(tmp_path / "*.log"), poll_interval=60.0)
    await tail.quiet(0.3)  # first scan done, watcher started
    write(tmp_path / "late.log", numbered("late", 0, 2))
    assert await tail.until(2, wait=5) == [b"late line 0", b"late line 1"]


async def test_a_file_changing_all_the_time_wakes_the_reader_at_most_once_per_gap(
    tmp_path, tail_factory
):
    """An access log written on every request: its notifications wake the reader at most once
    per ``wake_gap`` (each wake is a scan and a read), and every line still arrives."""
    log = tmp_path / "access.log"
    write(log, b"")
    tail = tail_factory(str(log), poll_interval=60.0, wake_gap=0.2)
    await tail.quiet(0.3)  # first scan done, watcher started
    scans = 0
    scan = tail.tailer.scan

    def counted() -> None:
        nonlocal scans
        scans += 1
        scan()

    tail.tailer.scan = counted  # type: ignore[method-assign]
    writes = 100
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def writer() -> None:
        for i in range(writes):  # one line every 10 ms: a change in every watchfiles step
            write(log, numbered("w", i, i + 1))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    lines = await tail.until(writes, wait=30)
    await task
    elapsed = loop.time() - started
    assert lines == [f"w line {i}".encode() for i in range(writes)]
    # Without the gap: about one wake per 20 ms step, ~50 in this second.
    assert scans <= 2 + elapsed / 0.2, (scans, elapsed)


async def test_new_files_noticed_by_polling_without_notifications(tmp_path, tail_factory):
    tail = tail_factory(str(tmp_path / "*.log"), watch=False, poll_interval=0.05)
    await tail.quiet(0.2)
    write(tmp_path / "late.log", numbered("late", 0, 2))
    assert await tail.until(2) == [b"late line 0", b"late line 1"]


async def test_missing_directory_is_polled_until_it_appears(tmp_path, tail_factory):
    tail = tail_factory(str(tmp_path / "later" / "*.log"))
    await tail.quiet(0.2)
    (tmp_path / "later").mkdir()
    write(tmp_path / "later" / "x.log", numbered("x", 0, 1))
    assert await tail.until(1) == [b"x line 0"]


async def test_non_regular_files_are_skipped(tmp_path, tail_factory):
    os.mkfifo(tmp_path / "fifo.log")
    write(tmp_path / "real.log", numbered("r", 0, 1))
    tail = tail_factory(str(tmp_path / "*.log"))
    assert await tail.until(1) == [b"r line 0"]
    assert [view.path for view in tail.tailer.files()] == [str(tmp_path / "real.log")]


async def test_reused_inode_with_new_content_is_a_new_file(tmp_path, tail_factory):
    log = tmp_path / "access.log"
    write(log, numbered("one", 0, 2))
    tail = tail_factory(str(log))
    await tail.until(2)
    first = tail.chunks[0].fingerprint
    os.unlink(log)
    write(log, numbered("two", 0, 1))  # the file system may hand out the same inode
    lines = await tail.until(3)
    assert lines[2] == b"two line 0"
    assert tail.chunks[-1].fingerprint != first
    assert tail.chunks[-1].bounds[0] == 0
