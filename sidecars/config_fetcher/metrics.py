"""The config-fetcher's own metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class FetcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "config_fetcher_fetches_total",
            "Fetches of the source by result: published (new content), unchanged (same digest), "
            "not_modified (HTTP 304), failed.",
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
        self.published = Info(
            "config_fetcher_published", "The currently published content.", registry=registry
        )
        self.reloads = Counter(
            "config_fetcher_reloads_total",
            "nginx reloads by method (signal, webhook) and result (ok, no_target, error).",
            ["method", "result"],
            registry=registry,
        )
        for result in ("published", "unchanged", "not_modified", "failed"):
            self.checks.labels(result)
        for stage in ("fetch", "verify", "publish"):
            self.failures.labels(stage)
