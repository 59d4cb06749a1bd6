"""Exponential backoff with full jitter and a cap, and a total deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``delay(n)`` is uniform in [0, min(cap, initial * factor**n)] ("full jitter"), which
    spreads retries of many replicas apart instead of synchronising them."""

    initial: float = 0.2
    cap: float = 10.0
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        # min() before the power would overflow for large attempts; clamp the exponent instead.
        return min(self.cap, self.initial * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * self.ceiling(attempt)


class Deadline:
    """A point in monotonic time; ``None`` seconds means no deadline."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float:
        if self._end is None:
            return float("inf")
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0
