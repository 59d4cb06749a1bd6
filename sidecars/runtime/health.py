"""Liveness and readiness state, set by a part and served by the health server."""

from __future__ import annotations

import time
from collections.abc import Callable


class Loop:
    """One of a part's loops that must keep turning: it calls ``tick()`` on every turn (waiting
    idle or retrying a failing remote counts: the loop is not stuck), ``close()`` when it ends."""

    __slots__ = ("_health", "last", "name")

    def __init__(self, health: Health, name: str) -> None:
        self._health = health
        self.name = name
        self.last = health._clock()

    def tick(self) -> None:
        self.last = self._health._clock()

    def close(self) -> None:
        self._health._loops.pop(self.name, None)


class Health:
    """Liveness is *recent progress* (a part calls ``progress()`` after each successful unit of
    work), not merely "the process answers"; readiness is set by the part when it can serve.

    A part made of several loops may instead register each with ``loop(name)``: liveness is
    then "every registered loop has turned within stale_after" (``progress()`` is not needed)."""

    def __init__(self, stale_after: float | None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.stale_after = stale_after
        self._last_progress = clock()
        self._ready = False
        self._ready_reason = "starting"
        self._loops: dict[str, Loop] = {}

    def progress(self) -> None:
        self._last_progress = self._clock()

    def loop(self, name: str) -> Loop:
        made = self._loops[name] = Loop(self, name)
        return made

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready, self._ready_reason = ready, reason

    def liveness(self) -> tuple[bool, str]:
        if self._loops:
            now = self._clock()
            stalest = min(self._loops.values(), key=lambda loop: loop.last)
            idle = now - stalest.last
            if self.stale_after is not None and idle > self.stale_after:
                return False, (
                    f"loop {stalest.name!r} has not turned for {idle:.1f}s "
                    f"(stale after {self.stale_after:g}s)"
                )
            return True, f"{len(self._loops)} loops turning, slowest {idle:.1f}s ago"
        idle = self._clock() - self._last_progress
        if self.stale_after is not None and idle > self.stale_after:
            return False, f"no progress for {idle:.1f}s (stale after {self.stale_after:g}s)"
        return True, f"last progress {idle:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        return self._ready, self._ready_reason or ("ready" if self._ready else "not ready")
