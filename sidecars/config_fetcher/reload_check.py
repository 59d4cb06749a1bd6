"""Did nginx take the reload? What it shows through the Pod's shared PID namespace and its error
log, read after a SIGHUP (or a webhook) to tell an accepted config from a rejected one.

nginx on SIGHUP parses the new config; if that fails it logs ``[emerg] ...`` from the master
and keeps serving the old config from memory with its old workers. If it succeeds it starts new
worker processes and the old ones turn into "nginx: worker process is shutting down", then
exit. So a reload is *accepted* once new workers exist and every old one is gone or shutting
down, and *rejected* on an ``[emerg]`` line from the master since the signal (or when no new
workers appear within the bound).

The error log is outside input (request paths and headers end up in it): a line counts only
when it *starts* with nginx's own ``YYYY/MM/DD HH:MM:SS [emerg] PID#TID:`` prefix, and from the
master's pid when it is known, so a request for ``/[emerg]`` logged at ``[error]`` cannot fake a
rejection. What is read is bounded (``max_bytes`` per check, lines cut at ``_MAX_LINE``), so a
flood of error lines during a reload costs no memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

# nginx's error log line prefix: "2026/12/01 08:07:51 [emerg] 20187#20187: message".
_LINE = re.compile(rb"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[([a-z]+)\] (\d+)#\d+: ")
_MAX_LINE = 4096  # longer lines are cut (nginx's own lines are shorter; a flood's need not be)
_WORKER = b"nginx: worker process"
_SHUTTING_DOWN = b"is shutting down"


@dataclass(frozen=True)
class LogMark:
    """Where the error log ended: read from here on, what nginx says after the signal."""

    path: Path
    inode: int
    offset: int


def mark_log(path: Path | None) -> LogMark | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None  # no log to read (not mounted, not yet written): the worker check remains
    return LogMark(path, st.st_ino, st.st_size)


def read_appended(mark: LogMark, max_bytes: int) -> tuple[bytes, LogMark]:
    """What was appended since ``mark`` (at most ``max_bytes``) and the mark after it. A file
    rotated away (new inode) or truncated (shorter than the mark) is read from its start."""
    try:
        # O_NONBLOCK and regular files only: the log is on a volume nginx's container writes,
        # and a FIFO in its place must not block the check (it runs under the publish lock).
        fd = os.open(mark.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return b"", mark
            offset = mark.offset
            if st.st_ino != mark.inode or st.st_size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(max_bytes)
            return data, LogMark(mark.path, st.st_ino, offset + len(data))
    except OSError:
        return b"", mark


class LogScan:
    """Feeds appended log bytes in any chunking; keeps the complete lines that reject a config.
    A partial last line waits (bounded) for the rest of it in the next chunk."""

    def __init__(self, master_pid: int | None) -> None:
        self.master_pid = master_pid
        self.rejections: list[str] = []
        self.started_workers = False  # nginx's notice after a config it accepted
        self._partial = b""

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[:_MAX_LINE]
        for line in lines:
            self._line(line[:_MAX_LINE])

    def _line(self, line: bytes) -> None:
        match = _LINE.match(line)
        if match is None:
            return
        level, pid = match.group(1), int(match.group(2))
        if self.master_pid is not None and pid != self.master_pid:
            return  # a worker's line (requests) or another nginx's
        message = line[match.end() :].decode("utf-8", "replace").strip()
        if level == b"emerg":
            self.rejections.append(f"[emerg] {message}")
        elif level == b"notice" and message == "start worker processes":
            self.started_workers = True


def _children_from_task_files(proc: Path, pid: int) -> set[int] | None:
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return None
    children: set[int] = set()
    try:
        for task in tasks:
            children.update(int(p) for p in (task / "children").read_text().split())
    except FileNotFoundError:
        return None  # a kernel without CONFIG_PROC_CHILDREN: scan instead
    except (OSError, ValueError):
        return None
    return children


def _children_by_scan(proc: Path, pid: int) -> set[int]:
    children: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_bytes()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def workers(master: int, proc: Path = Path("/proc")) -> dict[int, bool]:
    """The master's worker processes: pid -> is shutting down (cache manager/loader left out)."""
    children = _children_from_task_files(proc, master)
    if children is None:
        children = _children_by_scan(proc, master)
    result: dict[int, bool] = {}
    for child in children:
        try:
            cmdline = (proc / str(child) / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if _WORKER in cmdline:
            result[child] = _SHUTTING_DOWN in cmdline
    return result


def replaced(before: dict[int, bool], now: dict[int, bool]) -> bool:
    """New workers run and each worker from before the signal is gone or shutting down."""
    serving_before = {pid for pid, down in before.items() if not down}
    new = {pid for pid, down in now.items() if pid not in before and not down}
    return bool(new) and all(now.get(pid, True) for pid in serving_before)
