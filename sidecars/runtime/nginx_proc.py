"""Finding the nginx master process through a shared PID namespace (``shareProcessNamespace:
true``), to signal it: USR1 (reopen the logs) after a rotation.

A pid is signalled only once it is known to be an nginx master: its ``/proc/<pid>/cmdline``
starts with ``nginx: master process`` (the title nginx gives its master). A stale pid file or
a reused pid never makes us signal a stranger. Without a pid file, /proc is scanned; when
several masters are visible (a node-wide PID namespace, a test machine), the one holding the
log file open (``/proc/<pid>/fd``) is taken, and an ambiguity is an error, never a guess.
The signal goes through a pidfd opened before that check (``signal_master``), so a pid that
exits and is reused between the check and the signal cannot be hit either.

Used by both parts that signal nginx: the log-shipper (USR1 after a rotation) and the
config-fetcher (HUP after a publish).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path

MASTER_TITLE = b"nginx: master process"
PROC = Path("/proc")


class NginxNotFound(Exception):
    """No nginx master to signal; the message says why."""


class PidFileMissing(NginxNotFound):
    """The pid file does not exist (nginx not started yet, or stopped cleanly)."""


def _cmdline(pid: int, proc: Path) -> bytes:
    try:
        return (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""  # gone, or a zombie (empty command line)


def parent(pid: int, proc: Path = PROC) -> int | None:
    """``pid``'s parent from /proc/<pid>/status; None when it cannot be read."""
    try:
        status = (proc / str(pid) / "status").read_bytes()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(b"PPid:"):
            value = line[5:].strip()
            return int(value) if value.isdigit() else None
    return None


def is_master(pid: int, proc: Path = PROC) -> bool:
    return _cmdline(pid, proc).startswith(MASTER_TITLE)


def masters(proc: Path = PROC) -> list[int]:
    """Every visible nginx master's pid (never our own)."""
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    pids = sorted(int(name) for name in names if name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and is_master(pid, proc)]


def open_files(pid: int, proc: Path = PROC) -> set[tuple[int, int]] | None:
    """(device, inode) of the files ``pid`` holds open; None when they cannot be read."""
    fd_dir = proc / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    found = set()
    for fd in fds:
        try:
            info = os.stat(fd_dir / fd)  # follows the magic link to the open file
        except OSError:
            continue  # closed meanwhile
        found.add((info.st_dev, info.st_ino))
    return found


def holds_open(pid: int, dev_ino: tuple[int, int], proc: Path = PROC) -> bool | None:
    """Whether ``pid`` has the file (device, inode) open; None when its fds cannot be seen."""
    held = open_files(pid, proc)
    return None if held is None else dev_ino in held


_PIDFILE_MAX = 64  # "12345\n": far less


def read_pidfile(pidfile: Path) -> int:
    """The pid in ``pidfile``. Opened without blocking and read only if regular: the file lives
    on a volume nginx's container writes, and a FIFO there must not hang the reader."""
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise PidFileMissing(f"pid file {pidfile} does not exist (nginx not running?)") from None
    except OSError as exc:
        raise NginxNotFound(f"cannot read pid file {pidfile}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NginxNotFound(f"pid file {pidfile} is not a regular file")
        raw = os.read(fd, _PIDFILE_MAX)
    except OSError as exc:
        raise NginxNotFound(f"cannot read pid file {pidfile}: {exc.strerror}") from None
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    if not text.isdigit() or int(text) <= 1:
        raise NginxNotFound(f"pid file {pidfile} holds {text[:20]!r}, not a pid")
    return int(text)


def find_master(
    *,
    pidfile: Path | None = None,
    holding: tuple[int, int] | None = None,
    proc: Path = PROC,
) -> int:
    """The pid of the nginx master to signal; NginxNotFound (with the reason) otherwise.

    ``holding``: (st_dev, st_ino) of a log file the master must have open, to choose among
    several masters."""
    if pidfile is not None:
        pid = read_pidfile(pidfile)
        if not is_master(pid, proc):
            raise NginxNotFound(
                f"pid {pid} from {pidfile} is not an nginx master process (not running, or not "
                "visible: is shareProcessNamespace set?); not signalling it"
            )
        if holding is not None and holds_open(pid, holding, proc) is False:
            raise NginxNotFound(
                f"the nginx master {pid} from {pidfile} does not have the log file open: it is "
                "not one of its logs"
            )
        return pid
    found = masters(proc)
    if not found:
        raise NginxNotFound(
            "no nginx master process is visible in /proc: the Pod needs "
            "shareProcessNamespace: true (or give the master's pid file)"
        )
    if holding is None:
        if len(found) == 1:
            return found[0]
        raise NginxNotFound(f"{len(found)} nginx master processes are visible; give a pid file")
    answers = {pid: holds_open(pid, holding, proc) for pid in found}
    holders = [pid for pid, held in answers.items() if held]
    if len(holders) > 1:
        # A worker nginx has just forked keeps the master's title (and its log fds) until it
        # renames itself: a holder whose parent is another holder is that child, not a master.
        holders = [pid for pid in holders if parent(pid, proc) not in holders]
    if len(holders) == 1:
        return holders[0]
    if len(holders) > 1:
        raise NginxNotFound(f"several nginx masters hold the log open: {holders}")
    if len(found) == 1 and answers[found[0]] is None:
        return found[0]  # its fds are hidden from us, but it is the only nginx there is
    raise NginxNotFound(
        f"none of the {len(found)} visible nginx master processes has the log file open"
    )


def signal_master(pid: int, sig: signal.Signals, proc: Path = Path("/proc")) -> None:
    """Send ``sig`` to ``pid`` only if it is an nginx master. The process is pinned by a pidfd
    before its title is checked: if it exits and its pid is reused in between, the signal
    fails (ESRCH) instead of reaching the newcomer. Raises NginxNotFound or OSError."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        raise NginxNotFound(f"pid {pid} is not running") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise
        pidfd = None  # no pidfds (old kernel, strict seccomp): check, then kill
    try:
        if not is_master(pid, proc):
            raise NginxNotFound(f"pid {pid} is not an nginx master process; not signalling it")
        if pidfd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
    finally:
        if pidfd is not None:
            os.close(pidfd)
