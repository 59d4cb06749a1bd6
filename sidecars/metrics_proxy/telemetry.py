"""The metrics-proxy's own metrics, served with the rest on /metrics.

Kept as plain numbers and turned into families directly: they are read on every scrape, and
prometheus_client's collect() would cost more than fetching nginx does.
"""

from __future__ import annotations

from collections import Counter

from sidecars.metrics_proxy.exposition import Family, Labels, Sample
from sidecars.metrics_proxy.histogram import Histogram

FETCH_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5)


def _counter(name: str, help_text: str, values: Counter[Labels]) -> Family:
    samples = tuple(Sample(name, labels, float(n)) for labels, n in sorted(values.items()))
    return Family(name, "counter", help_text, samples)


class Telemetry:
    def __init__(self) -> None:
        self.scrapes: Counter[Labels] = Counter()
        self.collections = 0
        self.fetch_errors: Counter[Labels] = Counter()
        self.fetch_seconds: dict[str, Histogram] = {}
        self.upstream_up: dict[str, bool] = {}
        self.dropped: Counter[Labels] = Counter()

    def scraped(self, result: str) -> None:
        self.scrapes[(("result", result),)] += 1

    def fetched(self, source: str, seconds: float, error: str | None) -> None:
        histogram = self.fetch_seconds.get(source)
        if histogram is None:
            histogram = self.fetch_seconds[source] = Histogram(FETCH_BUCKETS)
        histogram.observe(seconds)
        if error is not None:
            self.fetch_errors[(("source", source), ("reason", error))] += 1

    def dropped_series(self, upstream: str, reason: str, count: int) -> None:
        self.dropped[(("upstream", upstream), ("reason", reason))] += count

    def layout(self) -> tuple[tuple[object, ...], ...]:
        """What decides the families' layout (their label sets): equal layouts, equal
        families but for the values."""
        return (
            tuple(self.scrapes),
            tuple(self.fetch_errors),
            tuple(self.fetch_seconds),
            tuple(self.upstream_up),
            tuple(self.dropped),
        )

    def values(self) -> list[float]:
        """The values of ``families()``' samples, in their order."""
        values: list[float] = [n for _, n in sorted(self.scrapes.items())]
        values.append(self.collections)
        values += [n for _, n in sorted(self.fetch_errors.items())]
        for _, histogram in sorted(self.fetch_seconds.items()):
            values += histogram.values()
        values += [ok for _, ok in sorted(self.upstream_up.items())]
        values += [n for _, n in sorted(self.dropped.items())]
        return values

    def families(self) -> list[Family]:
        durations: list[Sample] = []
        for source, histogram in sorted(self.fetch_seconds.items()):
            durations += histogram.samples(
                "metrics_proxy_fetch_duration_seconds", (("source", source),)
            )
        up = tuple(
            Sample("metrics_proxy_upstream_up", (("upstream", name),), float(ok))
            for name, ok in sorted(self.upstream_up.items())
        )
        return [
            _counter(
                "metrics_proxy_scrapes_total",
                "Requests to /metrics answered, by result (ok, unauthorized)",
                self.scrapes,
            ),
            Family(
                "metrics_proxy_collections_total",
                "counter",
                "Rounds of fetching nginx and the upstreams; concurrent scrapes share one round",
                (Sample("metrics_proxy_collections_total", (), float(self.collections)),),
            ),
            _counter(
                "metrics_proxy_fetch_errors_total",
                "Failed fetches of stub_status or an upstream /metrics, by source and reason",
                self.fetch_errors,
            ),
            Family(
                "metrics_proxy_fetch_duration_seconds",
                "histogram",
                "Time to fetch and parse stub_status or an upstream /metrics",
                tuple(durations),
            ),
            Family(
                "metrics_proxy_upstream_up",
                "gauge",
                "Whether the last fetch of an upstream /metrics succeeded and parsed",
                up,
            ),
            _counter(
                "metrics_proxy_dropped_series_total",
                "Upstream series left out of /metrics, by upstream and reason "
                "(name_collision, duplicate_series, unsupported_type); counted per scrape",
                self.dropped,
            ),
        ]
