"""A small state file written atomically: versioned JSON, temp file + fsync + rename.

A reader (this process after a crash, or an operator) sees the previous complete version or the
new complete version, never a mix: the new content is written to a temp file in the same
directory, fsynced, renamed over the old name, and the directory is fsynced so the rename itself
survives a power loss.

A state file that cannot be used (not JSON, truncated, another version, wrong shape) never
crashes the caller: ``load`` moves it aside to ``<name>.corrupt-<unix time>`` for inspection and
reports why, and the caller starts as if there had been no state (each part documents what that
means for it).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Loaded:
    data: dict[str, Any] | None  # the payload; None when there was no usable state
    problem: str | None = None  # why an existing file was not usable
    moved_to: Path | None = None  # where that file was put aside


class StateFile:
    def __init__(
        self, path: Path, kind: str, version: int, *, max_bytes: int | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes  # a larger file is set aside unread (memory bound)
        self.kind = kind  # guards against pointing two different parts at one file
        self.version = version

    def load(self) -> Loaded:
        try:
            with self.path.open("rb") as f:
                raw = f.read() if self.max_bytes is None else f.read(self.max_bytes + 1)
        except FileNotFoundError:
            return Loaded(None)
        if self.max_bytes is not None and len(raw) > self.max_bytes:
            return self.set_aside(f"state file is larger than {self.max_bytes} bytes")
        problem = self._problem(raw)
        if problem is None:
            return Loaded(json.loads(raw)["data"])
        return self.set_aside(problem)

    def set_aside(self, problem: str) -> Loaded:
        """Move an unusable file out of the way (kept for inspection) and say why."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            return Loaded(None, f"{problem} (could not move it aside: {exc})")
        return Loaded(None, problem, aside)

    def _problem(self, raw: bytes) -> str | None:
        if not raw.strip():
            return "state file is empty"
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"state file is not valid JSON ({exc}); truncated or corrupted"
        if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
            return "state file has no 'data' object"
        if document.get("kind") != self.kind:
            return f"state file is of kind {document.get('kind')!r}, expected {self.kind!r}"
        if document.get("version") != self.version:
            return (
                f"state file has version {document.get('version')!r}, "
                f"this build reads version {self.version}"
            )
        return None

    def save(self, data: dict[str, Any]) -> None:
        """Replace the file atomically; raises OSError (the previous version stays intact)."""
        document = {"kind": self.kind, "version": self.version, "data": data}
        payload = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        directory = self.path.parent
        temp = directory / f".{self.path.name}.tmp-{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        os.replace(temp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
