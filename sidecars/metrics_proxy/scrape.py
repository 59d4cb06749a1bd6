"""One scrape: fetch stub_status and the upstreams, build the families, render them.

Concurrent scrapes share one round of fetching (single flight): a thousand scrapers arriving
together cost nginx one stub_status request, and the rendered body is encoded once per format.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.client import Fetched, Fetcher, FetchError, describe
from sidecars.metrics_proxy.exposition import Family, Format, Labels, render
from sidecars.metrics_proxy.merge import (
    ExpositionError,
    Merged,
    Parsed,
    merge,
    parse_exposition,
)
from sidecars.metrics_proxy.own import OwnMetrics, OwnParts
from sidecars.metrics_proxy.stub_status import StubStatus, StubStatusError, parse_stub_status
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.metrics_proxy.worker import Busy, LoopThread
from sidecars.runtime import logs

log = logging.getLogger("sidecars.metrics_proxy")

T = TypeVar("T")

STUB_STATUS = "stub_status"

_PARSING = threading.Lock()


class SingleFlight(Generic[T]):
    """``run()`` calls ``produce`` unless a call is already in flight, then waits for that
    call's outcome.

    The first caller makes the call itself, in its own task: no task of its own for the call
    and no extra turns of the event loop, which at one scrape at a time would cost more than
    the scrape's own work. The others each wait on a future of their own, so one that goes away
    (a client disconnect cancels it) leaves the rest waiting. When the first caller goes away
    while others wait, the call is started again for them in a task, so they still get an
    answer, and one made after they asked."""

    def __init__(self, produce: Callable[[], Awaitable[T]]) -> None:
        self._produce = produce
        self._flying = False
        self._waiters: list[asyncio.Future[T]] = []

    async def run(self) -> T:
        if self._flying:
            waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            return await waiter
        self._flying = True
        try:
            result = await self._produce()
        except Exception as exc:
            self._finish(None, exc)
            raise
        except BaseException:  # cancelled: the call is gone, not its outcome
            if self._waiters:
                task = asyncio.ensure_future(self._produce())
                task.add_done_callback(self._landed)
            else:
                self._flying = False
            raise
        self._finish(result, None)
        return result

    def _landed(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():  # the process is stopping
            waiters, self._waiters, self._flying = self._waiters, [], False
            for waiter in waiters:
                waiter.cancel()
            return
        error = task.exception()
        self._finish(None if error is not None else task.result(), error)

    def _finish(self, result: T | None, error: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, []
        self._flying = False
        for waiter in waiters:
            if waiter.done():  # its caller went away
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(result)  # type: ignore[arg-type]


# A snapshot with more samples than this is rendered in a thread: a merged upstream can make
# it megabytes, which would hold the event loop (and /healthz) for a noticeable time.
LARGE_SNAPSHOT = 20_000


class Snapshot:
    """The families of one round (or only our own, as parts), with each encoding rendered at
    most once."""

    def __init__(self, families: Sequence[Family] | OwnParts) -> None:
        self._parts = families if isinstance(families, OwnParts) else None
        self.families = families if self._parts is None else ()
        self.samples = sum(len(family.samples) for family in self.families)
        self._bodies: dict[tuple[Format, bool], bytes] = {}
        self._rendering: dict[tuple[Format, bool], asyncio.Future[bytes]] = {}

    def _render(self, fmt: Format, compressed: bool) -> bytes:
        parts = self._parts
        body = render(self.families, fmt) if parts is None else parts.render(fmt)
        if compressed:
            body = gzip.compress(body, compresslevel=1, mtime=0)
        return body

    def body(self, fmt: Format, compressed: bool) -> bytes:
        key = (fmt, compressed)
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = self._render(fmt, compressed)
        return body

    async def body_async(self, fmt: Format, compressed: bool) -> bytes:
        """As ``body``; a large snapshot is rendered in a thread, once for all who ask."""
        key = (fmt, compressed)
        body = self._bodies.get(key)
        if body is not None:
            return body
        if self.samples < LARGE_SNAPSHOT:
            return self.body(fmt, compressed)
        rendering = self._rendering.get(key)
        if rendering is None:
            rendering = self._rendering[key] = asyncio.ensure_future(
                asyncio.to_thread(self._render, fmt, compressed)
            )
        try:
            body = await asyncio.shield(rendering)
        finally:
            if rendering.done():
                self._rendering.pop(key, None)  # a failed rendering is tried again
        self._bodies[key] = body
        return body


class SourceState:
    """Logs a source's failures when they start and end, not once per scrape."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.failing: str | None = None
        self.said_invalid = False

    def ok(self) -> None:
        if self.failing is not None:
            log.info("source recovered", extra=logs.kv(source=self.source))
        self.failing = None

    def failed(self, reason: str, detail: str) -> None:
        if self.failing != reason:
            log.warning(
                "source failed", extra=logs.kv(source=self.source, reason=reason, error=detail)
            )
        self.failing = reason

    def invalid(self, detail: str) -> None:
        """Some families were left out (they would break OpenMetrics): said once, not per
        scrape; the count is in metrics_proxy_dropped_series_total{reason="invalid"}."""
        if not self.said_invalid:
            log.warning(
                "families left out",
                extra=logs.kv(source=self.source, reason="invalid", error=detail),
            )
        self.said_invalid = True


class Upstream:
    """A merged upstream: fetched and parsed in its own thread (see worker.py), so its size or
    its misbehaviour bound only its own part of a scrape."""

    def __init__(self, name: str, fetcher: Fetcher) -> None:
        self.name = name
        self.fetcher = fetcher
        self.state = SourceState(name)
        self.worker = LoopThread(name)

    async def read(self, convert: Callable[[Fetched, float], Parsed]) -> Parsed:
        """Fetch and ``convert(fetched, deadline)`` in the upstream's thread, within the
        fetcher's timeout of wall clock. Past it, or while an earlier fetch still holds the
        thread, FetchError; the fetch's and the conversion's own errors come through."""
        timeout = self.fetcher.timeout

        async def job() -> Parsed:
            deadline = time.monotonic() + timeout
            fetched = await self.fetcher.get()
            return convert(fetched, deadline)

        try:
            return await self.worker.run(job, timeout)
        except TimeoutError:
            raise FetchError(
                "timeout", f"no complete answer from {self.fetcher.target} within {timeout:g}s"
            ) from None
        except Busy:
            raise FetchError(
                "stalled",
                f"the previous fetch of {self.fetcher.target} has still not ended: its thread "
                "is held (a parser looping on hostile bytes?); restart the process to free it",
            ) from None

    async def close(self) -> None:
        if not self.worker.busy:
            try:
                await self.worker.run(self.fetcher.close, 2.0)
            except Exception as exc:  # best effort: the process is ending
                log.debug("closing", extra=logs.kv(source=self.name, error=describe(exc)))
        self.worker.stop()


class Scraper:
    def __init__(
        self,
        *,
        stub_status: Fetcher,
        upstreams: Sequence[Upstream] = (),
        merge_prefix: str = "",
        merge_label: str = "",
        const_labels: Labels = (),
        access_log: AccessLogMetrics | None = None,
        registry: CollectorRegistry,
        telemetry: Telemetry,
    ) -> None:
        self.stub_status = stub_status
        self.upstreams = list(upstreams)
        self.merge_prefix = merge_prefix
        self.merge_label = merge_label
        self.const_labels = const_labels
        self.access_log = access_log
        self.registry = registry
        self.telemetry = telemetry
        self._stub_state = SourceState(STUB_STATUS)
        for upstream in self.upstreams:
            telemetry.upstream_up[upstream.name] = False
        self.own = OwnMetrics(
            telemetry=telemetry,
            registry=registry,
            access_log=access_log,
            const_labels=const_labels,
        )
        self._flight: SingleFlight[Snapshot] = SingleFlight(self._collect)

    async def snapshot(self) -> Snapshot:
        return await self._flight.run()

    async def _read_stub_status(self) -> StubStatus | None:
        started = time.perf_counter()
        status = error = None
        try:
            fetched = await self.stub_status.get()
            status = parse_stub_status(fetched.body.decode("utf-8", "replace"))
        except FetchError as exc:
            error = exc.reason
            self._stub_state.failed(exc.reason, exc.detail)
        except StubStatusError as exc:
            error = "parse"
            self._stub_state.failed(error, f"{self.stub_status.target}: {exc}")
        except Exception as exc:  # a bug of ours must not turn every scrape into a 500
            error = "internal"
            self._stub_state.failed(error, f"{self.stub_status.target}: {describe(exc)}")
        else:
            self._stub_state.ok()
        self.telemetry.fetched(STUB_STATUS, time.perf_counter() - started, error)
        return status

    def _convert(self, upstream: Upstream) -> Callable[[Fetched, float], Parsed]:
        label = ((self.merge_label, upstream.name),) if self.merge_label else ()
        labels = label + self.const_labels

        def convert(fetched: Fetched, deadline: float) -> Parsed:
            # One body parsed at a time: a parse holds several times its body's size while it
            # runs, and under the GIL parsing two at once would not be faster anyway.
            if not _PARSING.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("waited past the deadline for another upstream's parse")
            try:
                return parse_exposition(
                    fetched.body,
                    fetched.content_type,
                    prefix=self.merge_prefix,
                    labels=labels,
                    deadline=deadline,
                )
            finally:
                _PARSING.release()

        return convert

    async def _read_upstream(self, upstream: Upstream) -> tuple[str, list[Family]] | None:
        """The upstream's families (renamed, labelled, const labels on), or None when any
        part of fetching or parsing it failed: each failure is that upstream's alone."""
        started = time.perf_counter()
        parsed = error = None
        try:
            parsed = await upstream.read(self._convert(upstream))
        except FetchError as exc:
            error = exc.reason
            upstream.state.failed(exc.reason, exc.detail)
        except ExpositionError as exc:
            error = "parse"
            upstream.state.failed(error, f"{upstream.fetcher.target}: {exc}")
        except Exception as exc:  # whatever else: still this upstream's failure, never a 500
            error = "internal"
            upstream.state.failed(error, f"{upstream.fetcher.target}: {describe(exc)}")
        else:
            upstream.state.ok()
        self.telemetry.fetched(upstream.name, time.perf_counter() - started, error)
        self.telemetry.upstream_up[upstream.name] = parsed is not None
        if parsed is None:
            return None
        if parsed.unsupported:
            self.telemetry.dropped_series(upstream.name, "unsupported_type", parsed.unsupported)
        if parsed.duplicates:
            self.telemetry.dropped_series(upstream.name, "duplicate_series", parsed.duplicates)
        if parsed.invalid:
            self.telemetry.dropped_series(upstream.name, "invalid", parsed.invalid)
            upstream.state.invalid(parsed.invalid_detail)
        return upstream.name, parsed.families

    async def _collect(self) -> Snapshot:
        self.telemetry.collections += 1
        if self.upstreams:
            status, *fetched = await asyncio.gather(
                self._read_stub_status(), *(self._read_upstream(u) for u in self.upstreams)
            )
        else:  # the common case; gather would cost a task per scrape
            status, fetched = await self._read_stub_status(), []
        upstream = [item for item in fetched if item is not None]
        if not upstream:  # our own families never collide among themselves
            return Snapshot(self.own.parts(status))
        own = self.own.families(status)
        # The upstreams' families carry the const labels already (added while parsing).
        if sum(len(f.samples) for _, families in upstream for f in families) < LARGE_SNAPSHOT:
            merged = merge(own, upstream)
        else:  # a large upstream makes this a noticeable time: not on the loop
            merged = await asyncio.to_thread(merge, own, upstream)
        self._count_dropped(merged)
        return Snapshot(merged.families)

    def _count_dropped(self, merged: Merged) -> None:
        for (source, reason), count in merged.dropped.items():
            self.telemetry.dropped_series(source, reason, count)

    async def close(self) -> None:
        await self.stub_status.close()
        for upstream in self.upstreams:
            await upstream.close()
