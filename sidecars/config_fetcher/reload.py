"""Telling nginx about a new version: SIGHUP to its master (pid file on a shared volume, with
``shareProcessNamespace: true``; without the pid file, the master found by its title in /proc,
as for an unchanged nginx image whose pid file is its own) or a POST to a webhook; bursts
debounced into one reload; then watching nginx take it or refuse it (reload_check.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sidecars.config_fetcher import reload_check
from sidecars.runtime import nginx_proc
from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.config_fetcher.reload")


class ReloadError(Exception):
    def __init__(self, reason: str, result: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result  # metric label: no_target, error


def read_pid(pidfile: Path) -> int:
    try:
        return nginx_proc.read_pidfile(pidfile)
    except nginx_proc.PidFileMissing as exc:
        raise ReloadError(str(exc), "no_target") from None
    except nginx_proc.NginxNotFound as exc:
        raise ReloadError(str(exc), "error") from None


def master_by_log(error_log: Path | None, proc: Path = Path("/proc")) -> int:
    """Without a pid file: the nginx master in the shared PID namespace that holds ``error_log``
    open (an unchanged nginx image keeps its pid file to itself). Holding the log is required,
    so a host's other nginx masters are never taken for ours."""
    if error_log is None:
        raise ReloadError("no pid file and no --nginx-error-log to find nginx by", "no_target")
    try:
        info = error_log.stat()
    except OSError:
        raise ReloadError(f"no pid file, and {error_log} does not exist yet", "no_target") from None
    try:
        return nginx_proc.find_master(holding=(info.st_dev, info.st_ino), proc=proc)
    except nginx_proc.NginxNotFound as exc:
        raise ReloadError(f"no pid file, and {exc}", "no_target") from None


def find_master(pidfile: Path, proc: Path = Path("/proc"), error_log: Path | None = None) -> int:
    """The pid in ``pidfile``, but only if it still is nginx's master (runtime/nginx_proc.py):
    a stale pid file must not make us signal whatever process reused that pid, such as another
    sidecar whose command line merely mentions nginx. No pid file: see master_by_log."""
    try:
        pid = read_pid(pidfile)
    except ReloadError as exc:
        if exc.result != "no_target":
            raise
        return master_by_log(error_log, proc)
    if not (proc / str(pid)).exists():
        raise ReloadError(
            f"pid {pid} from {pidfile} is not running (or not visible: "
            "is shareProcessNamespace set?)",
            "no_target",
        )
    if not nginx_proc.is_master(pid, proc):
        raise ReloadError(
            f"pid {pid} from {pidfile} is not an nginx master process; not signalling it",
            "error",
        )
    return pid


def nginx_started_at(
    pidfile: Path, proc: Path = Path("/proc"), error_log: Path | None = None
) -> float | None:
    """When the running nginx master started (its pid file is written once it has loaded its
    config), or None when no nginx runs."""
    try:
        pid = find_master(pidfile, proc, error_log)
    except ReloadError:
        return None
    try:
        return pidfile.stat().st_mtime
    except OSError:  # no pid file of ours: when the master process started
        return _started(pid, proc)


def _started(pid: int, proc: Path) -> float | None:
    try:
        ticks = int((proc / str(pid) / "stat").read_text().rsplit(") ", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in (proc / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def hup(pid: int, pidfile: Path, proc: Path = Path("/proc")) -> None:
    """SIGHUP nginx's master ``pid`` (pinned by a pidfd, its title checked again)."""
    try:
        nginx_proc.signal_master(pid, signal.SIGHUP, proc)
    except nginx_proc.NginxNotFound as exc:
        raise ReloadError(f"{exc} (from {pidfile})", "no_target") from None
    except OSError as exc:
        raise ReloadError(f"cannot signal nginx pid {pid}: {exc.strerror}", "error") from None


def signal_pidfile(pidfile: Path, proc: Path = Path("/proc"), error_log: Path | None = None) -> int:
    """SIGHUP the nginx master named by ``pidfile`` (see find_master)."""
    pid = find_master(pidfile, proc, error_log)
    hup(pid, pidfile, proc)
    return pid


async def post_webhook(url: str, timeout_s: float) -> int:
    import aiohttp  # only webhook users load the HTTP client

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response,
        ):
            if response.status >= 300:
                raise ReloadError(f"POST {url}: HTTP {response.status}", "error")
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ReloadError(f"POST {url}: {type(exc).__name__}: {exc}", "error") from None


@dataclass(frozen=True)
class Outcome:
    result: str  # metric label: ok, rejected, no_target, error
    method: str  # signal, webhook
    detail: str  # nginx's own error line when rejected; what was seen otherwise
    verified: bool = False  # nginx was seen to take it (not merely signalled)
    pid: int | None = None
    # No verdict in time (rejected for that alone): nginx may still take it after we gave up.
    timed_out: bool = False


_POLL = 0.05
_CHUNK = 64 * 1024  # error-log bytes read per poll: the memory a log flood can cost


async def reload_verified(
    *,
    pidfile: Path | None,
    webhook: str | None,
    error_log: Path | None,
    http_timeout: float,
    verify_timeout: float,
    max_log_bytes: int = 8 * 1024**2,
    proc: Path = Path("/proc"),
) -> Outcome:
    """Signal (and/or POST) nginx, then wait up to ``verify_timeout`` for its verdict: new
    workers replacing the old ones (accepted) or an ``[emerg]`` line from its master in the
    error log since the signal (rejected). With the master's pid unknown (webhook only) the
    error log alone decides; with neither, the reload is only sent (``verified`` False)."""
    method = "signal" if pidfile is not None else "webhook"
    master = None
    if pidfile is not None:
        try:
            master = await asyncio.to_thread(find_master, pidfile, proc, error_log)
        except ReloadError as exc:
            return Outcome(exc.result, method, exc.reason)
    before = await asyncio.to_thread(reload_check.workers, master, proc) if master else {}
    mark = await asyncio.to_thread(reload_check.mark_log, error_log)
    try:
        if master is not None:
            assert pidfile is not None
            await asyncio.to_thread(hup, master, pidfile, proc)
        if webhook is not None:
            await post_webhook(webhook, http_timeout)
    except ReloadError as exc:
        return Outcome(exc.result, method, exc.reason, pid=master)
    if master is None and mark is None:
        return Outcome("ok", method, "sent (no pid and no error log to verify it)")
    scan = reload_check.LogScan(master)
    budget = max_log_bytes
    deadline = time.monotonic() + verify_timeout

    def look() -> Outcome | None:
        nonlocal mark, budget
        # Workers first, log second: nginx logs a rejection before it would fork new workers.
        now = reload_check.workers(master, proc) if master else {}
        if master is not None and not (proc / str(master)).exists():
            return Outcome("no_target", method, f"nginx master {master} exited", pid=master)
        while mark is not None and budget > 0:
            data, mark = reload_check.read_appended(mark, min(_CHUNK, budget))
            if not data:
                break
            budget -= len(data)
            scan.feed(data)
        if scan.rejections:
            return Outcome("rejected", method, scan.rejections[0], verified=True, pid=master)
        if master is not None and reload_check.replaced(before, now):
            new = sorted(set(now) - set(before))
            return Outcome("ok", method, f"new workers {new}", verified=True, pid=master)
        if master is None and scan.started_workers:
            return Outcome("ok", method, "nginx started new workers", verified=True)
        return None

    while True:
        outcome = await asyncio.to_thread(look)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL)
    if master is not None:
        return Outcome(
            "rejected",
            method,
            f"no new worker processes within {verify_timeout:g}s of the signal",
            verified=True,
            pid=master,
            timed_out=True,
        )
    return Outcome("ok", method, f"no [emerg] in the error log within {verify_timeout:g}s")


class Debouncer:
    """Runs ``action`` once, ``delay`` seconds after the last of a burst of ``trigger()`` calls."""

    def __init__(self, action: Callable[[], Awaitable[None]], delay: float) -> None:
        self._action = action
        self._delay = delay
        self._pending = asyncio.Event()
        self._due = 0.0

    def trigger(self) -> None:
        self._due = asyncio.get_running_loop().time() + self._delay
        self._pending.set()

    @property
    def pending(self) -> bool:
        return self._pending.is_set()

    async def flush(self) -> None:
        """Run a pending action now (used at shutdown, so no reload is lost)."""
        if self._pending.is_set():
            self._pending.clear()
            await self._action()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._pending.wait()
            # Each trigger() pushes _due back; sleep until a quiet period has passed.
            while (wait := self._due - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self._pending.clear()
            try:
                await self._action()
            except Exception:  # a reload failure must never stop future reloads
                log.exception("reload failed", extra=kv())
