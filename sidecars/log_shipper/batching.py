"""Cut lines into batches by size and age. Pure logic (the clock is injected).

A batch holds consecutive lines of one stream, so it has one idempotency key (fingerprint +
offsets) and one Loki stream. It is cut when it reaches ``batch_bytes`` (at the first line
boundary at or past it), when its first line is ``batch_wait`` old, or at a *replayed* boundary:
one cut before a restart whose batch was not acknowledged, so the re-sent batch is the same.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecars.log_shipper.sinks.base import Batch


@dataclass(slots=True)
class _Open:
    path: str
    fingerprint: str
    born: float
    lines: list[str] = field(default_factory=list)
    bounds: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    fields: list[Any] | None = None

    def batch(self) -> Batch:
        return Batch(
            self.path, self.fingerprint, self.lines, self.bounds, self.timestamps, self.fields
        )


class Batcher:
    def __init__(
        self,
        batch_bytes: int,
        batch_wait: float,
        replay: dict[str, list[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_bytes = batch_bytes
        self.batch_wait = batch_wait
        self.replay = {fp: sorted(ends) for fp, ends in (replay or {}).items() if ends}
        self.clock = clock
        self._open: dict[str, _Open] = {}

    def add(
        self,
        fingerprint: str,
        path: str,
        lines: list[str],
        bounds: list[int],
        timestamps: list[int],
        fields: list[Any] | None,
    ) -> list[Batch]:
        """Add consecutive lines (``bounds`` has one more entry than ``lines``); returns the
        batches this completes."""
        done: list[Batch] = []
        current = self._open.get(fingerprint)
        if current is not None and current.bounds[-1] != bounds[0]:
            done.append(self._close(fingerprint))  # not contiguous: never mix two ranges
            current = None
        count = len(lines)
        index = 0
        while index < count:
            if current is None:
                current = _Open(path, fingerprint, self.clock(), bounds=[bounds[index]])
                if fields is not None:
                    current.fields = []
                self._open[fingerprint] = current
            cut_at = current.bounds[0] + self.batch_bytes
            pending = self.replay.get(fingerprint)
            if pending:
                while pending and pending[0] <= current.bounds[0]:
                    pending.pop(0)  # already behind us
                if pending:
                    cut_at = min(cut_at, pending[0])
            # first boundary at or past cut_at among bounds[index + 1 .. count]
            stop = bisect_left(bounds, cut_at, index + 1, count + 1)
            full = stop <= count
            stop = min(stop, count)
            current.lines.extend(lines[index:stop])
            current.bounds.extend(bounds[index + 1 : stop + 1])
            current.timestamps.extend(timestamps[index:stop])
            if fields is not None and current.fields is not None:
                current.fields.extend(fields[index:stop])
            index = stop
            if full:
                done.append(self._close(fingerprint))
                current = None
        return done

    def _close(self, fingerprint: str) -> Batch:
        current = self._open.pop(fingerprint)
        pending = self.replay.get(fingerprint)
        end = current.bounds[-1]
        while pending and pending[0] <= end:
            pending.pop(0)
        if pending is not None and not pending:
            del self.replay[fingerprint]
        return current.batch()

    def open_bytes(self) -> int:
        """Bytes of the file covered by the batches not cut yet."""
        return sum(current.bounds[-1] - current.bounds[0] for current in self._open.values())

    def next_due(self) -> float | None:
        """Monotonic time at which the oldest open batch is due, None if none is open."""
        if not self._open:
            return None
        return min(current.born for current in self._open.values()) + self.batch_wait

    def due(self) -> list[Batch]:
        now = self.clock()
        return [
            self._close(fingerprint)
            for fingerprint, current in list(self._open.items())
            if now - current.born >= self.batch_wait
        ]

    def flush(self) -> list[Batch]:
        return [self._close(fingerprint) for fingerprint in list(self._open)]
