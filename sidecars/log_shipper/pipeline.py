"""One sink's pipeline: tail -> decode, parse, stamp -> batch -> byte-bounded queue -> send -> ack.

Each sink has its own pipeline, its own reader over the files and its own offsets, so a slow or
hanging sink only fills its own queue and pauses its own reader; the other sinks keep shipping.
The lines it has not acknowledged stay on disk (the reader holds deleted and rotated files open
until it has read them), and after a restart each sink resumes from its own offset, so nothing
is re-sent to a sink that had acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sidecars.log_shipper.batching import Batcher
from sidecars.log_shipper.metrics import ShipperMetrics
from sidecars.log_shipper.queue import ByteQueue
from sidecars.log_shipper.settings import Settings
from sidecars.log_shipper.sinks import SinkSpec
from sidecars.log_shipper.sinks.base import Batch, Sink, SinkError
from sidecars.log_shipper.state import Checkpointer
from sidecars.log_shipper.timestamps import Stamper, anchor_of
from sidecars.runtime.backoff import Backoff
from sidecars.runtime.logs import kv
from sidecars.runtime.tail import Chunk, Tailer

log = logging.getLogger("sidecars.log_shipper")

_IDLE_TICK = 0.25  # how often an idle reader looks at the stop flag


class SinkPipeline:
    def __init__(
        self,
        spec: SinkSpec,
        sink: Sink,
        settings: Settings,
        checkpointer: Checkpointer,
        metrics: ShipperMetrics,
    ) -> None:
        self.key = spec.key
        self.sink = sink
        self.settings = settings
        self.checkpointer = checkpointer
        self.metrics = metrics
        self.parser = settings.parser
        self.tailer = Tailer(
            settings.paths,
            positions=checkpointer.positions(self.key),
            start_at=settings.start_position,  # type: ignore[arg-type]
            max_line_bytes=settings.max_line_bytes,
            long_lines=settings.long_lines,  # type: ignore[arg-type]
            poll_interval=settings.poll_interval,
            rotate_wait=settings.rotate_wait,
        )
        self.batcher = Batcher(
            settings.batch_bytes, settings.batch_wait, checkpointer.replay(self.key)
        )
        self.queue = ByteQueue(settings.queue_bytes)
        self.backoff = Backoff(initial=settings.retry_initial, cap=settings.retry_max)
        self.stampers: dict[str, Stamper] = {}
        self.up = True
        self.last_error = ""
        self.reading_done = asyncio.Event()
        metrics.register_sink(self.key)
        self._read_lines = metrics.read_lines.labels(self.key)
        self._read_bytes = metrics.read_bytes.labels(self.key)
        self._unparsed = metrics.unparsed_lines.labels(self.key)

    # --- reading -------------------------------------------------------------------------------

    async def read(self, stop: asyncio.Event) -> None:
        """Read and batch until ``stop``; then hand the open batches to the sender."""
        try:
            while not stop.is_set():
                due = self.batcher.next_due()
                wait = _IDLE_TICK if due is None else min(_IDLE_TICK, due - time.monotonic())
                try:
                    chunk = await asyncio.wait_for(self.tailer.__anext__(), max(0.0, wait))
                except TimeoutError:
                    chunk = None
                if chunk is not None:
                    for batch in self._process(chunk):
                        await self._enqueue(batch)
                for batch in self.batcher.due():
                    await self._enqueue(batch)
            for batch in self.batcher.flush():
                await self._enqueue(batch)
        finally:
            self.reading_done.set()

    def _process(self, chunk: Chunk) -> list[Batch]:
        fingerprint = chunk.fingerprint
        stream = self.checkpointer.stream(fingerprint, chunk.path)
        progress = self.checkpointer.progress(fingerprint, self.key, chunk.start)
        stamper = self.stampers.get(fingerprint)
        if stamper is None:
            anchor = progress.anchor_ns if progress.offset == chunk.start else None
            stamper = self.stampers[fingerprint] = Stamper(anchor or stream.seen_ns)
        texts = [line.decode("utf-8", "replace") for line in chunk.lines]
        fields = None
        if self.parser is not None:
            parse = self.parser.parse
            fields = [parse(text) for text in texts]
            unparsed = fields.count(None)
            if unparsed:
                self._unparsed.inc(unparsed)
        stamps = stamper.stamp(texts, fields, chunk.bounds)
        self._read_lines.inc(len(texts))
        self._read_bytes.inc(chunk.end - chunk.start)
        return self.batcher.add(fingerprint, stream.path, texts, chunk.bounds, stamps, fields)

    async def _enqueue(self, batch: Batch) -> None:
        generation = self.checkpointer.cut(batch.fingerprint, self.key, batch.end)
        await self.queue.put(batch, generation)

    # --- sending -------------------------------------------------------------------------------

    async def send(self, stop: asyncio.Event) -> None:
        """Deliver queued batches in order until the reader is done and the queue is empty."""
        while not (self.reading_done.is_set() and len(self.queue) == 0):
            get = asyncio.ensure_future(self.queue.get())
            done_reading = asyncio.ensure_future(self.reading_done.wait())
            await asyncio.wait({get, done_reading}, return_when=asyncio.FIRST_COMPLETED)
            done_reading.cancel()
            if not get.done():
                get.cancel()
                continue
            batch, generation = get.result()
            await self.checkpointer.until_durable(generation)
            await self._deliver(batch)

    async def _deliver(self, batch: Batch) -> None:
        key = self.key
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self.sink.send(batch)
            except SinkError as exc:
                self.metrics.send_duration.labels(key).observe(time.monotonic() - started)
                if not exc.retryable:
                    self._mark_up()
                    self.metrics.dropped_lines.labels(key, exc.reason).inc(len(batch))
                    log.warning(
                        "batch rejected by the sink; dropped",
                        extra=kv(sink=key, reason=str(exc), lines=len(batch), batch=batch.key),
                    )
                    break
                delay = self._retry(exc.reason, str(exc), attempt, exc.retry_after)
            except Exception as exc:  # a sink bug must not kill shipping: retry, loudly
                log.exception("sink failed unexpectedly; retrying", extra=kv(sink=key))
                delay = self._retry(f"error_{type(exc).__name__}", repr(exc), attempt, None)
            else:
                self.metrics.send_duration.labels(key).observe(time.monotonic() - started)
                self._mark_up()
                self.metrics.shipped_lines.labels(key).inc(len(batch))
                self.metrics.shipped_bytes.labels(key).inc(batch.nbytes)
                self.metrics.shipped_batches.labels(key).inc()
                self.metrics.last_success.labels(key).set(time.time())
                break
            attempt += 1
            await asyncio.sleep(delay)
        last = len(batch) - 1
        anchor = anchor_of(batch.timestamps[last], batch.bounds[last])
        self.checkpointer.done(batch.fingerprint, key, batch.end, anchor)

    def _retry(self, reason: str, detail: str, attempt: int, retry_after: float | None) -> float:
        delay = self.backoff.delay(attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.settings.retry_max))
        self.metrics.retries.labels(self.key, reason).inc()
        self.metrics.sink_up.labels(self.key).set(0)
        if self.up:
            log.warning(
                "sink unavailable; retrying",
                extra=kv(sink=self.key, reason=detail, retry_in=round(delay, 3)),
            )
        self.up, self.last_error = False, detail
        return delay

    def _mark_up(self) -> None:
        if not self.up:
            log.info("sink available again", extra=kv(sink=self.key))
        self.up, self.last_error = True, ""
        self.metrics.sink_up.labels(self.key).set(1)

    # --- for metrics and state -----------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        behind: dict[str, int] = {}
        streams = self.checkpointer.streams
        for view in self.tailer.files():
            stream: Any = streams.get(view.fingerprint or "")
            progress = None if stream is None else stream.sinks.get(self.key)
            acked = 0 if progress is None else progress.offset
            behind[view.path] = max(behind.get(view.path, 0), max(0, view.size - acked))
        return behind

    def open_fingerprints(self) -> set[str]:
        return {view.fingerprint for view in self.tailer.files() if view.fingerprint}
