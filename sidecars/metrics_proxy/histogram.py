"""A fixed-bucket histogram kept as plain numbers, exposed as Prometheus samples."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from sidecars.metrics_proxy.exposition import Labels, Sample


def format_le(bound: float) -> str:
    # As the official client libraries write bounds ("0.5", "1.0", "+Inf"), so dashboards'
    # le="1.0" selectors match.
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Histogram:
    __slots__ = ("_les", "bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.total = 0.0
        self.count = 0
        self._les = tuple(format_le(b) for b in (*self.bounds, float("inf")))

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def samples(self, name: str, labels: Labels = ()) -> list[Sample]:
        result = []
        running = 0
        for le, count in zip(self._les, self.counts, strict=True):
            running += count
            bucket = (*labels, ("le", le))
            result.append(Sample(name + "_bucket", bucket, float(running)))
        result.append(Sample(name + "_sum", labels, self.total))
        result.append(Sample(name + "_count", labels, float(self.count)))
        return result

    def values(self) -> list[float]:
        """The values of ``samples()``, in their order."""
        result: list[float] = []
        running = 0
        for count in self.counts:
            running += count
            result.append(running)
        result.append(self.total)
        result.append(self.count)
        return result
