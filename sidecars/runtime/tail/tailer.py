"""Follow the files matching some globs, across rotation, truncation and deletion.

Model: a *source* is an open file (one fd, one inode); a *stream* is a fingerprinted content
(see identity.py) with a read position. Usually each stream has one source. A copy of a file
(``copytruncate``'s ``access.log.1``) is a second source of the same stream: it is read only
where it has bytes the stream has not read yet, so its content is never delivered twice.

- Rename rotation: the old fd keeps being read to its end; once its name no longer matches the
  globs (or it was deleted) and it has been quiet for ``rotate_wait`` at its end, it is released.
  The new file at the old name is a new inode and a new fingerprint: read from offset 0.
- copytruncate: a file that shrank, or whose first line changed, was truncated. Its stream ends
  there (a copy may continue it) and the file restarts as a new stream at 0.
- Files found at the very first scan start at ``positions[fingerprint]`` when known (a
  checkpoint), else at ``start_at``; files that appear later always start at 0.
- New files are noticed through watchfiles (inotify) and, as a fallback for file systems without
  notifications, a stat of the globs every ``poll_interval``.

Reads are plain ``pread`` calls on the event loop's thread: log files live on a local volume
(emptyDir) where a read of ``read_bytes`` from the page cache takes microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sidecars.runtime.logs import kv
from sidecars.runtime.tail.identity import read_fingerprint, still_matches
from sidecars.runtime.tail.lines import LineSplitter, LongLines

log = logging.getLogger("sidecars.tail")

# The least time between two wake-ups by file notifications. A file written on every request
# (an access log) changes all the time, and watchfiles yields after each 20 ms step that saw a
# change: ~50 wake-ups a second, each a scan and a short read. At most 5 a second read the same
# lines in fewer, larger reads: the log-shipper at 10,000 lines/s used 17 % less CPU
# (bench/pod_tax/TRIED.md), and a quiet file's first change still wakes the reader at once.
WAKE_GAP = 0.2

StartAt = Literal["beginning", "end"]

_REMEMBERED_POSITIONS = 4096  # ended streams kept in memory to recognise later copies


@dataclass(slots=True)
class Chunk:
    """Complete lines read from one stream: line ``i`` is ``lines[i]`` (raw bytes, no newline)
    at file offsets ``bounds[i]`` to ``bounds[i + 1]``."""

    fingerprint: str
    path: str  # the name of the file read from, at the time of the read
    lines: list[bytes]
    bounds: list[int]
    long_lines: int = 0

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def end(self) -> int:
        return self.bounds[-1]


@dataclass
class TailStats:
    """Counters since start (exported as metrics by the part that owns the tailer)."""

    bytes_read: int = 0
    lines_read: int = 0
    long_lines: int = 0
    truncations: int = 0
    files_opened: int = 0
    files_released: int = 0
    partial_lines_dropped: int = 0  # an unterminated last line destroyed by truncation


@dataclass(frozen=True, slots=True)
class FileView:
    path: str
    fingerprint: str | None
    size: int
    position: int | None  # the stream's read position, None while the identity is unsettled


@dataclass(slots=True, eq=False)
class _Source:
    fd: int
    path: str
    dev: int
    ino: int
    initial: bool  # found by the first scan: start_at/positions apply
    size: int = 0
    opened_size: int = 0  # its size when opened: where start_at="end" starts
    fingerprint: str | None = None
    fingerprint_size: int = 0
    gone: bool = False  # no watched name leads to it any more (renamed away or deleted)
    changed_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True, eq=False)
class _Stream:
    fingerprint: str
    position: int  # next byte to read
    splitter: LineSplitter
    sources: list[_Source] = field(default_factory=list)

    def holder(self) -> _Source | None:
        # The longest copy has the most of this content; ties go to the first found.
        best = None
        for source in self.sources:
            if best is None or source.size > best.size:
                best = source
        return best

    def resume_offset(self) -> int:
        """Where a later reader must start to miss nothing: the start of the held line."""
        return self.splitter.partial_start


def watch_roots(patterns: Sequence[str]) -> tuple[set[str], bool]:
    """The directories to watch for ``patterns`` and whether that must be recursive (a glob in
    a directory component)."""
    roots: set[str] = set()
    recursive = False
    for pattern in patterns:
        parts = os.path.abspath(pattern).split(os.sep)
        fixed: list[str] = []
        for index, part in enumerate(parts):
            if glob.has_magic(part):  # type: ignore[attr-defined]
                recursive = recursive or index < len(parts) - 1
                break
            fixed.append(part)
        else:
            fixed = fixed[:-1]  # a plain file name: watch its directory
        roots.add(os.sep.join(fixed) or os.sep)
    return roots, recursive


class Tailer:
    """``async for chunk in Tailer(["/var/log/nginx/*.log"]): ...``

    The consumer pulls: while it does not ask for the next chunk nothing is read, which is the
    backpressure a byte-bounded queue behind it relies on.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        positions: Mapping[str, int] | None = None,
        start_at: StartAt = "beginning",
        max_line_bytes: int = 64 * 1024,
        long_lines: LongLines = "split",
        read_bytes: int = 256 * 1024,
        poll_interval: float = 1.0,
        rotate_wait: float = 5.0,
        watch: bool = True,
        wake_gap: float = WAKE_GAP,
    ) -> None:
        self.patterns = list(patterns)
        self.start_at = start_at
        self.max_line_bytes = max_line_bytes
        self.long_lines = long_lines
        self.read_bytes = read_bytes
        self.poll_interval = poll_interval
        self.rotate_wait = rotate_wait
        self.stats = TailStats()
        self._positions: dict[str, int] = dict(positions or {})
        self._sources: dict[tuple[int, int], _Source] = {}
        self._streams: dict[str, _Stream] = {}
        self._first_scan = True
        self._next_scan = 0.0
        self._turn = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._warned: set[str] = set()
        self._watch = watch
        self.wake_gap = wake_gap
        self._watched: frozenset[str] = frozenset()
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_stop: asyncio.Event | None = None

    # --- the consumer's side -------------------------------------------------------------------

    def __aiter__(self) -> Tailer:
        return self

    async def __anext__(self) -> Chunk:
        # Let the loop breathe between chunks under load. Awaiting only before a read, never
        # between a read and its return, keeps cancellation from losing a chunk.
        await asyncio.sleep(0)
        while not self._closed:
            chunk = self.read_ready()
            if chunk is not None:
                return chunk
            timeout = max(0.0, self._next_scan - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        raise StopAsyncIteration

    def read_ready(self) -> Chunk | None:
        """The next chunk if one can be read without waiting (after a scan, when one is due);
        None otherwise. For a caller that reads a backlog in a loop without a task per chunk:
        it must let the loop run between calls, as ``__anext__`` does."""
        if self._closed:
            return None
        if self._wake.is_set() or time.monotonic() >= self._next_scan:
            self._wake.clear()
            self.scan()
        return self._read_some()

    def wake(self) -> None:
        """Look at the files now rather than at the next poll."""
        self._wake.set()

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        await self._stop_watcher()
        for source in list(self._sources.values()):
            self._close_source(source, count=False)
        self._streams.clear()

    def drop(self, fingerprint: str) -> int | None:
        """Stop reading the content ``fingerprint`` and close its files (they are about to be
        deleted to free space: retention). Returns how many of its bytes were never handed
        out (from the start of a line held in part to the end of the file), None when it is
        not being read. A copy found later is recognised and not read again."""
        stream = self._streams.pop(fingerprint, None)
        if stream is None:
            return None
        size = stream.position
        for source in stream.sources:
            with contextlib.suppress(OSError):
                size = max(size, os.fstat(source.fd).st_size)
            self._sources.pop((source.dev, source.ino), None)
            self.stats.files_released += 1
            with contextlib.suppress(OSError):
                os.close(source.fd)
        self._remember(fingerprint, size)
        log.info("file dropped", extra=kv(fingerprint=fingerprint, size=size))
        return max(0, size - stream.resume_offset())

    def files(self) -> list[FileView]:
        views = []
        for source in self._sources.values():
            stream = self._streams.get(source.fingerprint or "")
            views.append(
                FileView(
                    source.path,
                    source.fingerprint,
                    source.size,
                    None if stream is None else stream.position,
                )
            )
        return views

    # --- discovery -----------------------------------------------------------------------------

    def _matching(self) -> dict[tuple[int, int], str]:
        found: dict[tuple[int, int], str] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    info = os.stat(path)
                except OSError:
                    continue  # vanished between glob and stat
                if not stat.S_ISREG(info.st_mode):
                    self._warn_once(path, "not a regular file, not tailed", mode=oct(info.st_mode))
                    continue
                found.setdefault((info.st_dev, info.st_ino), path)
        return found

    def scan(self) -> None:
        """Find new files, notice renames, deletions and truncations, settle identities,
        release finished files. Called on every notification and at least every poll."""
        now = time.monotonic()
        self._next_scan = now + self.poll_interval
        found = self._matching()
        for key, source in list(self._sources.items()):
            path = found.pop(key, None)
            if path is None:
                if not source.gone:
                    log.info("file left the watched names", extra=kv(path=source.path))
                source.gone = True
            elif path != source.path:
                log.info("file renamed", extra=kv(path=path, previous=source.path))
                source.path, source.gone = path, False
            self._check(source, now)
        for key, path in found.items():
            self._open(key, path, now)
        for source in list(self._sources.values()):
            if source.fingerprint is None:
                self._identify(source)
        self._first_scan = False
        if self._watch:
            self._ensure_watcher()

    def _open(self, key: tuple[int, int], path: str, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._warn_once(path, "cannot open", error=str(exc))
            return
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != key:
            os.close(fd)  # replaced between stat and open: the next scan sees the new one
            return
        self._warned.discard(path)
        source = _Source(
            fd, path, key[0], key[1], self._first_scan, info.st_size, info.st_size, changed_at=now
        )
        self._sources[key] = source
        self.stats.files_opened += 1
        log.info("file opened", extra=kv(path=path, size=info.st_size))

    def _check(self, source: _Source, now: float) -> None:
        info = os.fstat(source.fd)
        if info.st_size != source.size:
            source.changed_at = now
        if info.st_size < source.size or (
            source.fingerprint is not None
            and not still_matches(source.fd, source.fingerprint, source.fingerprint_size)
        ):
            self._truncated(source, info.st_size)
        source.size = info.st_size
        deleted = info.st_nlink == 0
        if (source.gone or deleted) and now - source.changed_at >= self.rotate_wait:
            stream = self._streams.get(source.fingerprint or "")
            if stream is None or stream.holder() is not source or stream.position >= source.size:
                self._close_source(source)

    def _identify(self, source: _Source) -> None:
        if source.size == 0:
            return
        identity = read_fingerprint(source.fd)
        if identity is None:
            return
        fingerprint, size = identity
        source.fingerprint, source.fingerprint_size = fingerprint, size
        stream = self._streams.get(fingerprint)
        if stream is None:
            stream = self._new_stream(fingerprint, source)
            self._streams[fingerprint] = stream
        elif log.isEnabledFor(logging.INFO):
            log.info(
                "file has content already being read (a copy)",
                extra=kv(path=source.path, fingerprint=fingerprint),
            )
        stream.sources.append(source)

    def _new_stream(self, fingerprint: str, source: _Source) -> _Stream:
        splitter = LineSplitter(self.max_line_bytes, self.long_lines)
        known = self._positions.get(fingerprint)
        if known is not None and known > source.size and source.initial:
            # A checkpoint past the end of a file found at start: only a truncation (refilled
            # with the same first line) or a state file not written by us does that, and what
            # the file holds now was never read. (A file found later may be a copy still being
            # written: its known position stands, so nothing is read twice.)
            log.warning(
                "saved position is past the end of the file; reading it from its start",
                extra=kv(path=source.path, fingerprint=fingerprint, saved=known, size=source.size),
            )
            known = 0
        if known is not None:
            position = known
            how = "checkpoint"
        elif source.initial and self.start_at == "end":
            # The end as it was at start, not when the identity settled (at the first complete
            # line): lines written in between are new lines, to be read.
            position = min(source.opened_size, source.size)
            how = "end"
        else:
            position = 0
            how = "beginning"
        # Starting at the end of a file whose last line is still being written: skip to the
        # next line start. A checkpoint needs no such care: it is always a boundary the splitter
        # itself produced (a line end, or a piece boundary of a split long line).
        skip = (
            how == "end"
            and position > 0
            and os.pread(source.fd, 1, position - 1) not in (b"\n", b"")
        )
        splitter.reset(position, skip_to_newline=skip)
        log.info(
            "reading file",
            extra=kv(path=source.path, fingerprint=fingerprint, offset=position, start=how),
        )
        return _Stream(fingerprint, position, splitter)

    def _truncated(self, source: _Source, new_size: int) -> None:
        self.stats.truncations += 1
        log.warning(
            "file truncated; reading it again from the start",
            extra=kv(path=source.path, size=new_size, previous_size=source.size),
        )
        self._detach(source)
        source.fingerprint, source.fingerprint_size = None, 0
        source.size = new_size
        self._wake.set()  # scan again now: the new content gets its identity and a stream

    def _detach(self, source: _Source) -> None:
        """Take ``source`` out of its stream; a stream left without sources ends."""
        stream = self._streams.get(source.fingerprint or "")
        if stream is None:
            return
        stream.sources.remove(source)
        if stream.sources:
            return
        if stream.splitter.partial or stream.splitter.discarding:
            self.stats.partial_lines_dropped += 1
        self._remember(stream.fingerprint, stream.resume_offset())
        del self._streams[stream.fingerprint]

    def _remember(self, fingerprint: str, offset: int) -> None:
        self._positions.pop(fingerprint, None)
        self._positions[fingerprint] = offset
        while len(self._positions) > _REMEMBERED_POSITIONS:
            del self._positions[next(iter(self._positions))]

    def _close_source(self, source: _Source, *, count: bool = True) -> None:
        if count:
            self._detach(source)
            self.stats.files_released += 1
            log.info("file released", extra=kv(path=source.path, size=source.size))
        self._sources.pop((source.dev, source.ino), None)
        with contextlib.suppress(OSError):
            os.close(source.fd)

    def _warn_once(self, path: str, message: str, **fields: object) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning(message, extra=kv(path=path, **fields))

    # --- reading -------------------------------------------------------------------------------

    def _read_some(self) -> Chunk | None:
        streams = list(self._streams.values())
        count = len(streams)
        for step in range(count):
            stream = streams[(self._turn + step) % count]
            chunk = self._read_stream(stream)
            if chunk is not None:
                self._turn = (self._turn + step + 1) % count
                return chunk
        return None

    def _read_stream(self, stream: _Stream) -> Chunk | None:
        while True:
            source = stream.holder()
            if source is None:
                return None
            data = os.pread(source.fd, self.read_bytes, stream.position)
            if not data:
                return None
            # Checked after the read: a truncation followed by new writes past our position
            # would otherwise hand us the middle of unrelated lines.
            if not still_matches(source.fd, stream.fingerprint, source.fingerprint_size):
                self._truncated(source, os.fstat(source.fd).st_size)
                if stream.fingerprint not in self._streams:
                    return None
                continue
            end = stream.position + len(data)
            if end > source.size:
                source.size = end
                source.changed_at = time.monotonic()
            lines = stream.splitter.feed(data, stream.position)
            stream.position = end
            self.stats.bytes_read += len(data)
            if lines.lines:
                self.stats.lines_read += len(lines.lines)
                self.stats.long_lines += lines.long_lines
                return Chunk(
                    stream.fingerprint, source.path, lines.lines, lines.bounds, lines.long_lines
                )

    # --- notifications -------------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        roots, recursive = watch_roots(self.patterns)
        existing = frozenset(root for root in roots if os.path.isdir(root))
        if existing == self._watched and (self._watch_task is None or not self._watch_task.done()):
            return
        if self._watch_stop is not None:
            self._watch_stop.set()
        self._watched = existing
        if not existing:
            self._watch_task = None
            return
        self._watch_stop = asyncio.Event()
        self._watch_task = asyncio.get_running_loop().create_task(
            self._run_watcher(sorted(existing), recursive, self._watch_stop)
        )

    async def _run_watcher(self, roots: list[str], recursive: bool, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        # watchfiles logs every batch of changes at info: one line per log write under load.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        try:
            async for _changes in awatch(
                *roots,
                watch_filter=None,
                debounce=200,
                step=20,
                stop_event=stop,
                recursive=recursive,
            ):
                self._wake.set()
                # Changes meanwhile gather in watchfiles and come at once after the pause.
                await asyncio.sleep(self.wake_gap)
        except Exception as exc:  # e.g. inotify limits: polling still works
            log.warning(
                "file notifications unavailable; polling",
                extra=kv(roots=roots, error=repr(exc), poll_interval=self.poll_interval),
            )

    async def _stop_watcher(self) -> None:
        if self._watch_stop is not None:
            self._watch_stop.set()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
