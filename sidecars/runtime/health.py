"""Liveness and readiness state, set by a part and served by the health server."""

from __future__ import annotations

import time
from collections.abc import Callable


class Health:
    """Liveness is *recent progress* (a part calls ``progress()`` after each successful unit of
    work), not merely "the process answers"; readiness is set by the part when it can serve."""

    def __init__(self, stale_after: float | None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.stale_after = stale_after
        self._last_progress = clock()
        self._ready = False
        self._ready_reason = "starting"

    def progress(self) -> None:
        self._last_progress = self._clock()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready, self._ready_reason = ready, reason

    def liveness(self) -> tuple[bool, str]:
        idle = self._clock() - self._last_progress
        if self.stale_after is not None and idle > self.stale_after:
            return False, f"no progress for {idle:.1f}s (stale after {self.stale_after:g}s)"
        return True, f"last progress {idle:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        return self._ready, self._ready_reason or ("ready" if self._ready else "not ready")
