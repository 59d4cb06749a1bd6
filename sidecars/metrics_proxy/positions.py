"""Where the proxy stopped counting each access-log file, kept across restarts (``--state-file``).

Without it a restarted proxy must choose between reading the log again from its start (every
request counted a second time: ``increase()`` over the restart reports the whole log as new
traffic) and reading it from its end (the requests served while it was down are never counted).
With it a restart resumes exactly where the last save was, and a file the proxy has never seen
is read from its start: the state lives on a volume of the Pod's lifetime, so an unseen file was
written in this Pod and each of its lines is counted once.

Positions are line boundaries (the end of a counted chunk), keyed by the tailer's fingerprint
(a hash of the file's first line, stable across rename rotation). They are saved at most every
``SAVE_INTERVAL`` and at shutdown: a crash (SIGKILL, OOM) counts again at most the lines of the
last interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sidecars.runtime.checkpoint import StateFile
from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.metrics_proxy")

STATE_KIND = "sidecars.metrics-proxy"
STATE_VERSION = 1
SAVE_INTERVAL = 1.0


def start_at(setting: str, state_file: Path | None) -> str:
    """``--access-log-start auto``: from the beginning when positions are kept (an unseen file
    is this Pod's), else from the end (a restart without state would count the log twice)."""
    if setting != "auto":
        return setting
    return "beginning" if state_file is not None else "end"


def decode(data: dict[str, Any]) -> dict[str, int]:
    """The ``data`` payload -> {fingerprint: offset}; ValueError naming the first bad entry."""
    files = data.get("files")
    if not isinstance(files, dict):
        raise ValueError("'files' is not an object")
    positions = {}
    for fingerprint, offset in files.items():
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"files[{fingerprint!r}] is not a non-negative integer: {offset!r}")
        positions[fingerprint] = offset
    return positions


class Positions:
    def __init__(self, path: Path) -> None:
        self.file = StateFile(path, STATE_KIND, STATE_VERSION)
        self.offsets: dict[str, int] = {}
        self._saved: dict[str, int] | None = None
        self._failing = False
        self._lock = threading.Lock()

    def load(self) -> dict[str, int]:
        """The saved positions ({} when there are none; an unusable file is set aside and
        logged: every file is then read from its start, as on a first start)."""
        loaded = self.file.load()
        if loaded.data is not None:
            try:
                self.offsets = decode(loaded.data)
            except ValueError as exc:
                loaded = self.file.set_aside(f"state file content is invalid: {exc}")
        if loaded.problem is not None:
            log.error(
                "state file unusable; starting without it (the access log is counted from its "
                "start again)",
                extra=kv(
                    state_file=str(self.file.path),
                    problem=loaded.problem,
                    moved_to=str(loaded.moved_to) if loaded.moved_to else None,
                ),
            )
        return dict(self.offsets)

    def counted(self, fingerprint: str, end: int) -> None:
        self.offsets[fingerprint] = end

    def pending(self, live: Iterable[str | None]) -> dict[str, int] | None:
        """Forget files no longer followed (``live``: the fingerprints followed now); the
        positions to write when they changed since the last write, else None. On the event
        loop's thread: ``counted`` changes the same dict."""
        keep = set(live)
        self.offsets = {fp: end for fp, end in self.offsets.items() if fp in keep}
        return None if self.offsets == self._saved else dict(self.offsets)

    def write(self, snapshot: dict[str, int]) -> bool:
        """Write ``snapshot`` atomically (any thread, one at a time); False (logged once until a
        write succeeds) when it failed, the previous file intact."""
        with self._lock:
            try:
                self.file.save({"files": snapshot})
            except OSError as exc:
                if not self._failing:
                    log.error(
                        "cannot write state file; retrying (a restart now would count the "
                        "lines read since the last write again)",
                        extra=kv(state_file=str(self.file.path), error=str(exc)),
                    )
                self._failing = True
                return False
            if self._failing:
                log.info("state file writable again", extra=kv(state_file=str(self.file.path)))
            self._failing = False
            self._saved = snapshot
            return True

    def save(self, live: Iterable[str | None]) -> bool:
        snapshot = self.pending(live)
        return True if snapshot is None else self.write(snapshot)

    async def keep_saving(self, live: Callable[[], Iterable[str | None]]) -> None:
        """Save every ``SAVE_INTERVAL`` while the positions change."""
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            snapshot = self.pending(live())
            if snapshot is not None:
                await asyncio.to_thread(self.write, snapshot)
