"""One sink's pipeline: tail -> decode, parse, stamp -> batch -> byte-bounded queue -> send -> ack.

Each sink has its own pipeline, its own reader over the files and its own offsets, so a slow or
hanging sink only fills its own queue and pauses its own reader; the other sinks keep shipping.
The lines it has not acknowledged stay on disk (the reader holds deleted and rotated files open
until it has read them), and after a restart each sink resumes from its own offset, so nothing
is re-sent to a sink that had acknowledged it.

Liveness: the reader and the sender each tick a loop of the health state on every turn, also
while they wait (for lines, for room in the queue, for the next batch) and while a failing sink
is retried: a sink that is down is a metric, not a stuck process. Only a loop that stops turning
fails /healthz.

Shutdown (``stop``): the reader goes on reading every file to its end; the end is final once
``writers_gone()`` says nothing writes any more (the nginx master has exited:
runtime/nginx_exit.py), then the open batches are flushed and the sender delivers what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sidecars.log_shipper.batching import Batcher
from sidecars.log_shipper.formats import LineFormats
from sidecars.log_shipper.metrics import ShipperMetrics
from sidecars.log_shipper.queue import ByteQueue
from sidecars.log_shipper.settings import Settings
from sidecars.log_shipper.sinks import SinkSpec
from sidecars.log_shipper.sinks.base import Batch, Sink, SinkError
from sidecars.log_shipper.state import Checkpointer
from sidecars.log_shipper.timestamps import Stamper, anchor_of
from sidecars.runtime.backoff import Backoff
from sidecars.runtime.health import Health
from sidecars.runtime.logs import kv
from sidecars.runtime.tail import Chunk, Tailer

log = logging.getLogger("sidecars.log_shipper")

_IDLE_TICK = 0.25  # how often an idle reader looks at the stop flag
_WAIT_TICK = 1.0  # a waiting loop still ticks its liveness this often
# One read from a file: large enough that per-read costs vanish, small enough that the read
# and its lines are a small part of the memory bound.
READ_BYTES = 128 * 1024


@dataclass(slots=True)
class _Outgoing:
    """A batch on its way to the sink. Once the sink has prepared it (``prepared``), its lines
    are dropped (``batch`` None): only what the acknowledgement needs is kept."""

    fingerprint: str
    key: str
    end: int
    lines: int
    nbytes: int
    anchor_ns: int  # for the checkpoint: the anchor in force at the batch's last line
    generation: int  # the state generation that holds the batch's boundary
    batch: Batch | None  # set while unprepared: delivered with sink.send(batch)
    prepared: Any = None

    @classmethod
    def of(cls, batch: Batch, generation: int) -> _Outgoing:
        last = len(batch) - 1
        anchor = anchor_of(batch.timestamps[last], batch.bounds[last])
        return cls(
            batch.fingerprint, batch.key, batch.end, len(batch), batch.nbytes, anchor,
            generation, batch,
        )  # fmt: skip


class SinkPipeline:
    def __init__(
        self,
        spec: SinkSpec,
        sink: Sink,
        settings: Settings,
        checkpointer: Checkpointer,
        metrics: ShipperMetrics,
        health: Health | None = None,
        *,
        formats: LineFormats | None = None,
        patterns: list[str] | None = None,
    ) -> None:
        self.key = spec.key
        loops = health if health is not None else Health(None)
        self._read_loop = loops.loop(f"read {spec.key}")
        self._send_loop = loops.loop(f"send {spec.key}")
        self.sink = sink
        self.settings = settings
        self.checkpointer = checkpointer
        self.metrics = metrics
        # One LineFormats for all sinks (main.py), so each file's format is detected once.
        self.formats = formats if formats is not None else LineFormats(settings.parser)
        self.tailer = Tailer(
            patterns if patterns is not None else settings.paths,
            positions=checkpointer.positions(self.key),
            start_at=settings.start_position,  # type: ignore[arg-type]
            max_line_bytes=settings.max_line_bytes,
            long_lines=settings.long_lines,  # type: ignore[arg-type]
            poll_interval=settings.poll_interval,
            rotate_wait=settings.rotate_wait,
            read_bytes=READ_BYTES,
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
        self.deduplicates = bool(getattr(sink, "deduplicates", False))
        self._prepare: Callable[[Batch], Awaitable[Any]] | None = getattr(sink, "prepare", None)
        metrics.register_sink(self.key)
        self._read_lines = metrics.read_lines.labels(self.key)
        self._read_bytes = metrics.read_bytes.labels(self.key)
        self._unparsed = metrics.unparsed_lines.labels(self.key)

    # --- reading -------------------------------------------------------------------------------

    async def read(
        self, stop: asyncio.Event, writers_gone: Callable[[], bool] = lambda: True
    ) -> None:
        """Read and batch until ``stop``; then read every file to its end (once
        ``writers_gone()``), and hand the open batches to the sender.

        Reading pauses while the lines held for the sink (queued or being encoded, plus the
        open batches) fill --queue-bytes: reading and encoding share one thread, so reading
        further ahead would only hold more lines in memory, not ship faster."""
        tick = self._read_loop.tick
        try:
            while True:
                tick()
                if not self.queue.has_room(self.batcher.open_bytes()):
                    await self._until_room()
                    continue
                # The loop runs the sender between reads. Awaiting before a read, never between
                # a read and its use, keeps cancellation from losing a chunk.
                await asyncio.sleep(0)
                chunk = self.tailer.read_ready()  # a backlog is read without a task per chunk
                if chunk is None and stop.is_set() and writers_gone():
                    self.tailer.scan()  # every file as it is now: new ones, final sizes
                    chunk = self.tailer.read_ready()
                    if chunk is None:
                        break  # at the end of every file, and nothing writes any more
                if chunk is None:
                    due = self.batcher.next_due()
                    wait = _IDLE_TICK if due is None else min(_IDLE_TICK, due - time.monotonic())
                    try:
                        chunk = await asyncio.wait_for(self.tailer.__anext__(), max(0.0, wait))
                    except TimeoutError:
                        chunk = None
                    except StopAsyncIteration:  # the tailer was closed: a forced stop
                        break
                if chunk is not None:
                    batches = self._process(chunk)
                    chunk = None  # its raw lines are not needed while waiting for the queue
                    for batch in batches:
                        await self._enqueue(batch)
                for batch in self.batcher.due():
                    await self._enqueue(batch)
            for batch in self.batcher.flush():
                await self._enqueue(batch)
        finally:
            self.reading_done.set()
            self._read_loop.close()

    def _process(self, chunk: Chunk) -> list[Batch]:
        fingerprint = chunk.fingerprint
        stream = self.checkpointer.stream(fingerprint, chunk.path)
        progress = self.checkpointer.progress(fingerprint, self.key, chunk.start)
        stamper = self.stampers.get(fingerprint)
        if stamper is None:
            anchor = progress.anchor_ns if progress.offset == chunk.start else None
            stamper = self.stampers[fingerprint] = Stamper(anchor or stream.seen_ns)
        try:  # strict decoding is the faster C path; invalid UTF-8 is the rare exception
            texts = list(map(bytes.decode, chunk.lines))
        except UnicodeDecodeError:
            texts = [line.decode("utf-8", "replace") for line in chunk.lines]
        fields, unparsed, times = self.formats.parse_chunk(fingerprint, stream.path, texts)
        if unparsed:
            self._unparsed.inc(unparsed)
        stamps = stamper.stamp(texts, fields, chunk.bounds, times)
        self._read_lines.inc(len(texts))
        self._read_bytes.inc(chunk.end - chunk.start)
        return self.batcher.add(fingerprint, stream.path, texts, chunk.bounds, stamps, fields)

    async def _until_room(self) -> None:
        room = asyncio.ensure_future(self.queue.until_room(self.batcher.open_bytes()))
        due = self.batcher.next_due()
        timeout = _WAIT_TICK if due is None else min(_WAIT_TICK, max(0.0, due - time.monotonic()))
        try:
            await asyncio.wait({room}, timeout=timeout)
        finally:
            room.cancel()
        for batch in self.batcher.due():
            await self._enqueue(batch)

    async def _enqueue(self, batch: Batch) -> None:
        # Wait for room in slices, ticking: a sink that is down holds the reader here.
        while not self.queue.fits(batch.nbytes):
            room = asyncio.ensure_future(self.queue.until_fits(batch.nbytes))
            try:
                await asyncio.wait({room}, timeout=_WAIT_TICK)
            finally:
                room.cancel()
            self._read_loop.tick()
        generation = self.checkpointer.cut(batch.fingerprint, self.key, batch.end)
        await self.queue.put(batch, generation)  # at once: this reader is the only producer

    # --- sending -------------------------------------------------------------------------------

    async def send(self, stop: asyncio.Event) -> None:
        """Deliver queued batches in order until the reader is done and the queue is empty.

        Depth 2: while one batch is being delivered, the next is taken from the queue and
        prepared (encoded, compressed on a worker thread), so the sink's round trip overlaps
        with the CPU work. Deliveries, and so acknowledgements and checkpoints, stay in order.
        """
        ahead: asyncio.Future[_Outgoing | None] = asyncio.ensure_future(self._next_prepared())
        tick = self._send_loop.tick
        try:
            while True:
                tick()
                while not ahead.done():  # idle until the next batch: still a turning loop
                    await asyncio.wait({ahead}, timeout=_WAIT_TICK)
                    tick()
                outgoing = ahead.result()
                if outgoing is None:
                    return
                ahead = asyncio.ensure_future(self._next_prepared())
                await self._deliver(outgoing)
        finally:
            self._send_loop.close()
            if not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead

    async def _next(self) -> tuple[Batch, int] | None:
        """The next queued batch; None once reading is done and the queue is empty."""
        while not (self.reading_done.is_set() and len(self.queue) == 0):
            get = asyncio.ensure_future(self.queue.get())
            done_reading = asyncio.ensure_future(self.reading_done.wait())
            try:
                await asyncio.wait({get, done_reading}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done_reading.cancel()
                if not get.done():
                    get.cancel()
            if get.done() and not get.cancelled():
                return get.result()
        return None

    async def _next_prepared(self) -> _Outgoing | None:
        item = await self._next()
        if item is None:
            return None
        batch, generation = item
        outgoing = _Outgoing.of(batch, generation)
        # The boundary is written while the batch is encoded, not when its turn to be sent comes.
        durable = asyncio.ensure_future(self.checkpointer.until_durable(generation))
        try:
            if self._prepare is not None:
                try:
                    outgoing.prepared = await self._prepare(batch)
                except Exception:  # a sink bug: _deliver's send() retries it, loudly
                    log.exception("sink failed to prepare a batch", extra=kv(sink=self.key))
                else:
                    outgoing.batch = None  # the prepared form is all deliver() needs
            del batch, item
            if outgoing.batch is None:
                await self.queue.release(outgoing.nbytes)
            await durable
        finally:
            durable.cancel()
        return outgoing

    async def _deliver(self, outgoing: _Outgoing) -> None:
        # The batch's boundary must be durable before its first send (stable idempotency keys).
        await self.checkpointer.until_durable(outgoing.generation)
        key = self.key
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                if outgoing.batch is not None:
                    await self.sink.send(outgoing.batch)
                else:
                    await self.sink.deliver(outgoing.prepared)  # type: ignore[attr-defined]
            except SinkError as exc:
                self.metrics.send_duration.labels(key).observe(time.monotonic() - started)
                if not exc.retryable:
                    self._mark_up()
                    self.metrics.dropped_lines.labels(key, exc.reason).inc(outgoing.lines)
                    log.warning(
                        "batch rejected by the sink; dropped",
                        extra=kv(
                            sink=key, reason=str(exc), lines=outgoing.lines, batch=outgoing.key
                        ),
                    )
                    break
                delay = self._retry(exc.reason, str(exc), attempt, exc.retry_after)
            except Exception as exc:  # a sink bug must not kill shipping: retry, loudly
                log.exception("sink failed unexpectedly; retrying", extra=kv(sink=key))
                delay = self._retry(f"error_{type(exc).__name__}", repr(exc), attempt, None)
            else:
                self.metrics.send_duration.labels(key).observe(time.monotonic() - started)
                self._mark_up()
                self.metrics.shipped_lines.labels(key).inc(outgoing.lines)
                self.metrics.shipped_bytes.labels(key).inc(outgoing.nbytes)
                self.metrics.shipped_batches.labels(key).inc()
                self.metrics.last_success.labels(key).set(time.time())
                break
            attempt += 1
            # A failed attempt is a turn of the loop; so is the pause (at most --retry-max).
            self._send_loop.tick()
            await asyncio.sleep(delay)
            self._send_loop.tick()
        if outgoing.batch is not None:  # held as lines until now
            outgoing.batch = None
            await self.queue.release(outgoing.nbytes)
        self.checkpointer.done(outgoing.fingerprint, key, outgoing.end, outgoing.anchor_ns)
        if not self.deduplicates:
            # The destination cannot absorb a repeat: record this acknowledgement before the
            # next batch goes out, so a crash repeats at most the batch then in flight.
            await self.checkpointer.until_durable(self.checkpointer.generation)

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
