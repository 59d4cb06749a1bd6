"""The log-shipper's own metrics, all labelled by sink (``kind=URL`` without credentials)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class ShipperMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.read_lines = counter("log_shipper_read_lines_total", "Lines read.", ["sink"])
        self.read_bytes = counter("log_shipper_read_bytes_total", "Bytes read.", ["sink"])
        self.shipped_lines = counter(
            "log_shipper_shipped_lines_total", "Lines acknowledged by the sink.", ["sink"]
        )
        self.shipped_bytes = counter(
            "log_shipper_shipped_bytes_total",
            "Bytes of file content acknowledged by the sink.",
            ["sink"],
        )
        self.shipped_batches = counter(
            "log_shipper_shipped_batches_total", "Batches acknowledged by the sink.", ["sink"]
        )
        self.dropped_lines = counter(
            "log_shipper_dropped_lines_total",
            "Lines not delivered, by reason (e.g. http_400: the sink rejected the batch).",
            ["sink", "reason"],
        )
        self.unparsed_lines = counter(
            "log_shipper_unparsed_lines_total",
            "Lines that did not match the log format (shipped raw).",
            ["sink"],
        )
        self.retries = counter(
            "log_shipper_retries_total",
            "Delivery attempts that failed and were retried, by reason.",
            ["sink", "reason"],
        )
        self.send_duration = Histogram(
            "log_shipper_send_duration_seconds",
            "Time for one delivery attempt of a batch.",
            ["sink"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.sink_up = Gauge(
            "log_shipper_sink_up",
            "1 if the last delivery attempt reached the sink, 0 while it is failing.",
            ["sink"],
            registry=registry,
        )
        self.last_success = Gauge(
            "log_shipper_last_success_timestamp_seconds",
            "Unix time of the sink's last acknowledged batch.",
            ["sink"],
            registry=registry,
        )

        # Rotation and retention (--rotate-bytes, --max-held-bytes: rotate.py).
        self.rotations = counter(
            "log_shipper_rotations_total",
            "Rotations of a tailed file by the shipper, by result (ok; no_master: no nginx "
            "master to signal, so not renamed; error: rename or signal failed).",
            ["result"],
        )
        self.dropped_bytes = counter(
            "log_shipper_dropped_bytes_total",
            "Bytes of log never delivered to the sink, by reason (retention: a rotated file "
            "deleted unread to keep under --max-held-bytes).",
            ["sink", "reason"],
        )
        self.held_bytes = Gauge(
            "log_shipper_held_bytes",
            "Log bytes kept on the volume for the sinks: rotated files not yet deleted plus the "
            "part of the live files the slowest sink has not acknowledged.",
            registry=registry,
        )
        self.rotated_files = Gauge(
            "log_shipper_rotated_files",
            "Rotated files on the volume waiting for every sink's acknowledgement.",
            registry=registry,
        )

    def register_sink(self, sink: str) -> None:
        for family in (
            self.read_lines,
            self.read_bytes,
            self.shipped_lines,
            self.shipped_bytes,
            self.shipped_batches,
            self.unparsed_lines,
            self.send_duration,
        ):
            family.labels(sink)
        self.sink_up.labels(sink).set(1)


class PipelineCollector:
    """Values read from the pipelines at scrape time: lag, queue fill, files, tail counters."""

    def __init__(self, pipelines: Callable[[], Iterable[Any]], checkpointer: Any) -> None:
        self._pipelines = pipelines
        self._checkpointer = checkpointer

    def collect(self) -> Iterable[Any]:
        lag = GaugeMetricFamily(
            "log_shipper_lag_bytes",
            "Bytes of a file not yet acknowledged by the sink.",
            labels=["sink", "path"],
        )
        queue = GaugeMetricFamily(
            "log_shipper_queue_bytes",
            "Bytes of batches held as lines for the sink: queued, or taken and not yet encoded.",
            labels=["sink"],
        )
        queue_limit = GaugeMetricFamily(
            "log_shipper_queue_limit_bytes",
            "The queue's bound; reading pauses when it is reached.",
            labels=["sink"],
        )
        files = GaugeMetricFamily(
            "log_shipper_files_open", "Files currently open for reading.", labels=["sink"]
        )
        long_lines = CounterMetricFamily(
            "log_shipper_long_lines",
            "Lines over --max-line-bytes (split pieces cut off, or lines truncated).",
            labels=["sink"],
        )
        truncations = CounterMetricFamily(
            "log_shipper_truncations",
            "Files found truncated (copytruncate) and read again from the start.",
            labels=["sink"],
        )
        partial = CounterMetricFamily(
            "log_shipper_partial_lines_dropped",
            "Unterminated last lines of files destroyed by truncation or released unfinished.",
            labels=["sink"],
        )
        for pipeline in self._pipelines():
            key = pipeline.key
            for path, behind in pipeline.lag().items():
                lag.add_metric([key, path], behind)
            queue.add_metric([key], pipeline.queue.bytes)
            queue_limit.add_metric([key], pipeline.queue.max_bytes)
            files.add_metric([key], len(pipeline.tailer.files()))
            stats = pipeline.tailer.stats
            long_lines.add_metric([key], stats.long_lines)
            truncations.add_metric([key], stats.truncations)
            partial.add_metric([key], stats.partial_lines_dropped)
        writes = CounterMetricFamily(
            "log_shipper_state_writes", "State file writes by result.", labels=["result"]
        )
        writes.add_metric(["ok"], self._checkpointer.writes)
        writes.add_metric(["error"], self._checkpointer.write_failures)
        yield from (lag, queue, queue_limit, files, long_lines, truncations, partial, writes)
