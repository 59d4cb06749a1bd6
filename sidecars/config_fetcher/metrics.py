"""The config-fetcher's own metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from sidecars.config_fetcher.publish import Published


class FetcherMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        stale_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._since = clock()  # no success yet: the age counts from the start
        self.stale_after = stale_after
        self.checks = Counter(
            "config_fetcher_fetches_total",
            "Fetches of the source by result: published (new content), unchanged (same digest), "
            "not_modified (HTTP 304), rejected (the content nginx rejected, not published "
            "again), unconfirmed (published but not seen loaded by nginx: reloaded again), "
            "failed.",
            ["result"],
            registry=registry,
        )
        self.failures = Counter(
            "config_fetcher_failures_total",
            "Failed checks by stage (fetch, verify, publish).",
            ["stage"],
            registry=registry,
        )
        self.retries = Counter(
            "config_fetcher_retries_total", "Retries after transient failures.", registry=registry
        )
        self.duration = Histogram(
            "config_fetcher_fetch_duration_seconds",
            "Time to fetch the source.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.bytes = Counter(
            "config_fetcher_fetched_bytes_total",
            "Bytes fetched from the source.",
            registry=registry,
        )
        self.last_success = Gauge(
            "config_fetcher_last_success_timestamp_seconds",
            "Unix time of the last successful check.",
            registry=registry,
        )
        age = Gauge(
            "config_fetcher_last_success_age_seconds",
            "Seconds since the last successful check (since start when none yet): an alert "
            "signal, the origin may be down; nginx keeps serving what it has.",
            registry=registry,
        )
        age.set_function(self.age)
        stale = Gauge(
            "config_fetcher_stale",
            "1 when no check succeeded for --stale-after seconds, else 0.",
            registry=registry,
        )
        stale.set_function(lambda: float(self.age() > self.stale_after))
        self.source_up = Gauge(
            "config_fetcher_source_up",
            "1 when the last check reached the source, 0 when it could not be fetched.",
            registry=registry,
        )
        self.published = Info(
            "config_fetcher_published",
            "The content ..data points at (what nginx loads at its next reload or start).",
            registry=registry,
        )
        self.served = Gauge(
            "config_fetcher_served_info",
            "The content nginx was last seen to load (after a verified reload, or at its start); "
            "absent while unknown.",
            ["version", "sha256"],
            registry=registry,
        )
        self.rejected = Gauge(
            "config_fetcher_rejected",
            "1 while the source holds content that nginx rejected (it stays unpublished).",
            registry=registry,
        )
        self.reloads = Counter(
            "config_fetcher_reloads_total",
            "nginx reloads by method (signal, webhook) and result (ok, rejected: rolled back, "
            "no_target: nginx not running, error).",
            ["method", "result"],
            registry=registry,
        )
        for result in ("published", "unchanged", "not_modified", "rejected", "failed"):
            self.checks.labels(result)
        for stage in ("fetch", "verify", "publish"):
            self.failures.labels(stage)

    def succeeded(self) -> None:
        now = self._clock()
        self._since = now
        self.last_success.set(now)

    def age(self) -> float:
        return max(0.0, self._clock() - self._since)

    def set_served(self, served: Published | None) -> None:
        self.served.clear()
        if served is not None:
            self.served.labels(served.version, served.digest).set(1)
