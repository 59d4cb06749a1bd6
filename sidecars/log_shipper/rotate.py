"""The shipper rotates nginx's logs itself (``--rotate-bytes``) and keeps what the volume holds
for lagging sinks under a cap (``--max-held-bytes``).

Rotation is logrotate's rename-and-signal: a live file (one matching ``--paths``) at or over
the size is renamed to ``NAME.<UTC time>Z`` in its directory, then the nginx master gets USR1
and reopens its logs, which creates a new file under the old name. nginx writes to the renamed
file until its workers have reopened; the tailers follow the rename (the rotated names are
among their globs), read the old file to its end and the new one from its start, so nothing is
lost or read twice across the reopen. The master is found through the shared PID namespace
(runtime/nginx_proc.py) *before* the rename: with no master to signal, nothing is renamed
(nginx would keep writing to the renamed file) and the reason is logged once.

A rotated file is deleted once every sink has acknowledged all of it (the checkpointed offsets
of its content), nginx has reopened the live name and the file has been quiet for
``--rotate-wait``. Past ``--max-held-bytes`` (retention.py) the oldest rotated files are
deleted even so: each sink's reader lets go of them first, and what it had not read yet is
counted in ``log_shipper_dropped_bytes_total{reason="retention"}`` and logged with the byte
counts; lines it had already read are still delivered.

One rotating shipper per logs directory: a second would delete rotated files once *its* sinks
have them, before the first one's have. The rotating shipper holds an ``flock`` on
``LOCK_NAME`` in each directory it rotates in, for as long as it runs (the kernel releases it
when the process ends, SIGKILL included, so there is no stale lock to clean up); a second one
finds it held and stops at start naming the holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sidecars.log_shipper.metrics import ShipperMetrics
from sidecars.log_shipper.retention import RotatedFile, held_bytes, over_cap, unacked
from sidecars.log_shipper.state import Checkpointer
from sidecars.runtime.logs import kv
from sidecars.runtime.nginx_exit import regular_files
from sidecars.runtime.nginx_proc import NginxNotFound, find_master, signal_master
from sidecars.runtime.tail.identity import read_fingerprint
from sidecars.runtime.tail.tailer import watch_roots

log = logging.getLogger("sidecars.log_shipper.rotate")

CHECK_INTERVAL = 0.5  # seconds between looks at the sizes: bounds the overshoot past the size
_SUFFIX = re.compile(r"\.(\d{8}T\d{6}\.\d{6}Z)\Z")
_REOPEN_WARN_AFTER = 10.0  # seconds without the live name back: nginx did not reopen
# At most one rotation of a file per this many seconds. A file's identity is its first line
# (runtime/tail/identity.py): two files whose first lines nginx wrote in the same second with
# the same content would be taken for copies, so consecutive files must not both start within
# one second; with a rotation size above a second of log this never binds.
_MIN_INTERVAL = 2.0


def rotated_name(path: str, now: float) -> str:
    """``access.log`` -> ``access.log.20261201T080000.123456Z`` (sorts by rotation time)."""
    micros = int(now * 1_000_000) % 1_000_000
    return f"{path}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{micros:06d}Z"


def rotation_of(path: str) -> tuple[str, str] | None:
    """(live name, rotation time) of a rotated file's name; None for any other name."""
    match = _SUFFIX.search(path)
    return None if match is None else (path[: match.start()], match.group(1))


def rotated_patterns(patterns: Sequence[str]) -> list[str]:
    """Globs of the rotated files of ``patterns``' files, for the tailers to follow them."""
    return [f"{pattern}.[0-9]*Z" for pattern in patterns]


LOCK_NAME = ".log-shipper-rotation.lock"  # a dot file: no log glob (``*.log``) matches it


class RotationLocked(Exception):
    """Another process rotates the logs of a directory this shipper would rotate in."""


class RotationLock:
    """The ``flock``s that make this shipper the only one rotating in its log directories."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    @classmethod
    def take(cls, patterns: Sequence[str]) -> RotationLock:
        fds: list[int] = []
        try:
            for directory in sorted(watch_roots(patterns)[0]):
                fds.append(_lock(os.path.join(directory, LOCK_NAME)))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _lock(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise RotationLocked(
            f"--rotate-bytes: cannot create the rotation lock {path}: {exc.strerror} (the "
            "log-shipper needs the logs volume mounted read-write to rotate)"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RotationLocked(f"--rotate-bytes: cannot lock {path}: {exc.strerror}") from None
        raise RotationLocked(
            f"--rotate-bytes: another log-shipper already rotates the logs in "
            f"{os.path.dirname(path)} ({holder}, holding {path}); one rotating shipper per logs "
            "volume: give this one --rotate-bytes 0, or its sinks to the other one (--sink "
            "takes several)"
        ) from None
    # Who holds it, for the message above (the lock is the flock, not this content).
    with contextlib.suppress(OSError):  # a full volume: the lock holds all the same
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _rename_problem(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the logs volume is full: a new directory entry needs space"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the log-shipper needs the logs volume mounted read-write"
    return exc.strerror or "unknown error"


def _fingerprint(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        identity = read_fingerprint(fd)
    finally:
        os.close(fd)
    return None if identity is None else identity[0]


class Rotator:
    def __init__(
        self,
        settings: Any,
        checkpointer: Checkpointer,
        pipelines: Callable[[], Sequence[Any]],
        metrics: ShipperMetrics,
        proc: Path = Path("/proc"),
    ) -> None:
        self.patterns = list(settings.paths)
        self.rotated_globs = rotated_patterns(self.patterns)
        self.rotate_bytes: int = settings.rotate_bytes
        self.max_held: int = settings.max_held_bytes
        self.pidfile: Path | None = settings.nginx_pidfile
        self.quiet = max(1.0, settings.rotate_wait)
        self.checkpointer = checkpointer
        self.pipelines = pipelines
        self.metrics = metrics
        self.proc = proc
        self._renamed: dict[str, float] = {}  # live path -> when renamed, until nginx reopened
        self._warned: set[str] = set()
        self._rotated_at: dict[str, float] = {}  # live path -> when last rotated

    async def run(self) -> None:
        while True:
            try:
                self.turn()
            except Exception:  # never let a failed look stop shipping; try again next turn
                log.exception("rotation check failed")
            await asyncio.sleep(CHECK_INTERVAL)

    # --- one look --------------------------------------------------------------------------------

    def turn(self) -> None:
        now = time.monotonic()
        live = self._live()
        for path in list(self._renamed):
            if path in live:
                del self._renamed[path]  # nginx reopened it
                self._warned.discard(f"reopen:{path}")
            elif now - self._renamed[path] > _REOPEN_WARN_AFTER:
                self._warn_once(
                    f"reopen:{path}",
                    "nginx did not reopen its log after USR1 (a full or read-only logs volume? "
                    "see nginx's error output); it keeps writing to the rotated file, which is "
                    f"kept; asked again every {_REOPEN_WARN_AFTER:g}s",
                    path=path,
                )
                # Reopening is idempotent, and nginx does not retry a reopen that failed: ask
                # again, so the live name comes back once the cause is gone.
                newest = max(regular_files([f"{path}.[0-9]*Z"]), default=None)
                if newest is not None and rotation_of(newest) is not None:
                    self._signal_again(path, newest)
                self._renamed[path] = now
        rotated_now = False
        for path, info in live.items():
            due = now - self._rotated_at.get(path, -_MIN_INTERVAL) >= _MIN_INTERVAL
            if info.st_size >= self.rotate_bytes and path not in self._renamed and due:
                rotated_now |= self._rotate(path, info)
        if rotated_now:  # what was live is rotated now: count it once, as a rotated file
            live = self._live()
        rotated = self._rotated()
        # nginx may still write only to the newest rotation of a name it has not reopened yet
        # (or whose live name is missing); every older one it left when it last reopened.
        newest: dict[str, RotatedFile] = {}
        for item in sorted(rotated, key=lambda f: (f.order, f.path)):
            newest[rotation_of(item.path)[0]] = item  # type: ignore[index]
        kept, droppable = [], []
        for item in rotated:
            base = rotation_of(item.path)[0]  # type: ignore[index]
            if base not in live and base not in self._renamed:
                self._signal_again(base, item.path)  # renamed, but the USR1 was lost (a crash)
            reopened = base in live and base not in self._renamed
            if reopened and item.acknowledged and self._quiet(item):
                self._delete(item)
                continue
            kept.append(item)
            if reopened or newest[base] is not item:
                droppable.append(item)  # nginx no longer writes to it: it may go past the cap
        self.metrics.rotated_files.set(len(kept))
        live_unacked = sum(
            unacked(info.st_size, self._acked(_fingerprint(path))) for path, info in live.items()
        )
        # Files nginx may still write to are held, never dropped: it would write on, unread.
        fixed = live_unacked + held_bytes([f for f in kept if f not in droppable], 0)
        for victim in over_cap(droppable, fixed, self.max_held):
            self._drop(victim, held_bytes(kept, live_unacked))
            kept.remove(victim)
        self.metrics.held_bytes.set(held_bytes(kept, live_unacked))

    def _live(self) -> dict[str, os.stat_result]:
        files = regular_files(self.patterns)
        return {path: info for path, info in files.items() if rotation_of(path) is None}

    def _rotated(self) -> list[RotatedFile]:
        found = []
        for path, info in regular_files(self.rotated_globs).items():
            parsed = rotation_of(path)
            if parsed is None:
                continue
            fingerprint = _fingerprint(path)
            found.append(
                RotatedFile(path, info.st_size, fingerprint, self._acked(fingerprint), parsed[1])
            )
        return found

    def _acked(self, fingerprint: str | None) -> tuple[int, ...]:
        """Per sink, the offset acknowledged in that content (0: nothing, or unknown)."""
        stream = self.checkpointer.streams.get(fingerprint or "")
        offsets = []
        for pipeline in self.pipelines():
            progress = None if stream is None else stream.sinks.get(pipeline.key)
            offsets.append(0 if progress is None else progress.offset)
        return tuple(offsets)

    def _quiet(self, item: RotatedFile) -> bool:
        """Not written for --rotate-wait: every nginx worker has reopened the live name."""
        try:
            info = os.stat(item.path)
        except OSError:
            return False
        return time.time() - info.st_mtime >= self.quiet and info.st_size == item.size

    # --- actions ---------------------------------------------------------------------------------

    def _rotate(self, path: str, info: os.stat_result) -> bool:
        """Rename ``path`` and tell nginx to reopen it; whether it was renamed."""
        rotations = self.metrics.rotations
        try:
            pid = find_master(
                pidfile=self.pidfile, holding=(info.st_dev, info.st_ino), proc=self.proc
            )
        except NginxNotFound as exc:
            rotations.labels("no_master").inc()
            self._warn_once(
                "no_master",
                "cannot rotate: no nginx master to signal, so the log is not renamed; rotate it "
                "in the nginx container instead (see README: rotation)",
                path=path,
                size=info.st_size,
                reason=str(exc),
            )
            return False
        target = rotated_name(path, time.time())
        try:
            os.rename(path, target)
        except OSError as exc:
            rotations.labels("error").inc()
            self._warn_once(
                f"rename:{path}",
                f"cannot rotate: renaming the log failed ({_rename_problem(exc)}); retried, "
                "nothing is lost meanwhile (the file grows on)",
                path=path,
                error=str(exc),
            )
            return False
        self._warned.discard(f"rename:{path}")  # a later failure is logged again
        try:
            signal_master(pid, signal.SIGUSR1, self.proc)
        except (OSError, NginxNotFound) as exc:
            rotations.labels("error").inc()
            try:
                os.rename(target, path)  # nginx writes on to the same inode: undo is safe
            except OSError as undo:
                log.error(
                    "cannot undo a rotation whose signal failed",
                    extra=kv(path=path, rotated=target, error=str(undo)),
                )
            self._warn_once(
                f"signal:{path}",
                "cannot rotate: signalling the nginx master failed",
                path=path,
                pid=pid,
                error=str(exc),
            )
            return False
        self._renamed[path] = self._rotated_at[path] = time.monotonic()
        rotations.labels("ok").inc()
        log.info("rotated", extra=kv(path=path, to=target, size=info.st_size, nginx_pid=pid))
        self._wake()
        return True

    def _signal_again(self, base: str, rotated: str) -> None:
        """A rotated file whose live name never came back: the shipper stopped between the
        rename and the signal, or nginx could not reopen. USR1 again (reopening is idempotent)
        so nginx moves on."""
        try:
            info = os.stat(rotated)
            pid = find_master(
                pidfile=self.pidfile, holding=(info.st_dev, info.st_ino), proc=self.proc
            )
            signal_master(pid, signal.SIGUSR1, self.proc)
        except (OSError, NginxNotFound) as exc:
            self._warn_once(
                f"again:{base}",
                "a rotated log's live name is missing and nginx could not be told to reopen it",
                path=base,
                rotated=rotated,
                error=str(exc),
            )
            return
        self._renamed[base] = time.monotonic()
        log.info("nginx told again to reopen its logs", extra=kv(path=base, nginx_pid=pid))

    def _delete(self, item: RotatedFile) -> None:
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._warn_once(f"unlink:{item.path}", "cannot delete a rotated file", error=str(exc))
            return
        log.info(
            "rotated file deleted: every sink acknowledged all of it",
            extra=kv(path=item.path, size=item.size),
        )
        self._wake()

    def _drop(self, victim: RotatedFile, held: int) -> None:
        dropped: dict[str, int] = {}
        for pipeline, acked in zip(self.pipelines(), victim.acked, strict=True):
            unread = None
            if victim.fingerprint is not None:
                unread = pipeline.tailer.drop(victim.fingerprint)
            if unread is None:  # its reader never had it open: all it did not acknowledge
                unread = max(0, victim.size - acked)
            dropped[pipeline.key] = unread
            self.metrics.dropped_bytes.labels(pipeline.key, "retention").inc(unread)
        try:
            os.unlink(victim.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # its readers let go already; the space is freed at the next try
            log.error("cannot delete a rotated file", extra=kv(path=victim.path, error=str(exc)))
        log.warning(
            "dropped the oldest rotated file to keep under --max-held-bytes; its unread bytes "
            "are lost for the sinks named",
            extra=kv(
                path=victim.path,
                size=victim.size,
                dropped_bytes=dropped,
                held_bytes=held,
                max_held_bytes=self.max_held,
            ),
        )

    def _wake(self) -> None:
        for pipeline in self.pipelines():
            pipeline.tailer.wake()

    def _warn_once(self, key: str, message: str, **fields: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, extra=kv(**fields))
