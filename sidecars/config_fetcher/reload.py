"""Telling nginx about a new version: SIGHUP to its master (pid file on a shared volume, with
``shareProcessNamespace: true``; without the pid file, the master found in /proc, as for an
unchanged nginx image whose pid file is its own) or a POST to a webhook; bursts debounced into
one reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.config_fetcher.reload")


class ReloadError(Exception):
    def __init__(self, reason: str, result: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result  # metric label: no_target, error


def read_pid(pidfile: Path) -> int:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        raise ReloadError(
            f"pid file {pidfile} does not exist (nginx not running?)", "no_target"
        ) from None
    except OSError as exc:
        raise ReloadError(f"cannot read pid file {pidfile}: {exc}", "error") from None
    if not text.isdigit() or int(text) <= 1:
        raise ReloadError(f"pid file {pidfile} holds {text[:20]!r}, not a pid", "error")
    return int(text)


MASTER = b"nginx: master process"


def find_master(proc: Path = Path("/proc")) -> int:
    """The one nginx master visible in the (shared) PID namespace, by its process title."""
    masters = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(MASTER):
                    masters.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    if not masters:
        raise ReloadError(
            f"no nginx master in {proc} (nginx not running, or is shareProcessNamespace unset?)",
            "no_target",
        )
    if len(masters) > 1:
        raise ReloadError(f"several nginx masters ({sorted(masters)}); not guessing", "error")
    return masters[0]


def signal_pidfile(pidfile: Path, proc: Path = Path("/proc")) -> int:
    """SIGHUP the pid in ``pidfile``, but only if it still is an nginx process: a stale pid file
    must not make us signal whatever process reused that pid. No pid file: the nginx master
    found in ``proc``."""
    try:
        pid = read_pid(pidfile)
    except ReloadError as exc:
        if exc.result != "no_target":
            raise
        pid = find_master(proc)
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        raise ReloadError(
            f"pid {pid} from {pidfile} is not running (or not visible: "
            "is shareProcessNamespace set?)",
            "no_target",
        ) from None
    except OSError as exc:
        raise ReloadError(f"cannot inspect pid {pid}: {exc}", "error") from None
    if b"nginx" not in cmdline:
        raise ReloadError(f"pid {pid} from {pidfile} is not nginx; not signalling it", "error")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ReloadError(f"cannot signal nginx pid {pid}: {exc.strerror}", "error") from None
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
