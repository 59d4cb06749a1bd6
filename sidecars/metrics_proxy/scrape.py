"""One scrape: fetch stub_status and the upstreams, build the families, render them.

Concurrent scrapes share one round of fetching (single flight): a thousand scrapers arriving
together cost nginx one stub_status request, and the rendered body is encoded once per format.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.client import Fetcher, FetchError
from sidecars.metrics_proxy.collector import stub_status_families
from sidecars.metrics_proxy.exposition import Family, Format, Labels, add_labels, render
from sidecars.metrics_proxy.merge import (
    ExpositionError,
    convert_metric,
    merge,
    parse_exposition,
    rename,
)
from sidecars.metrics_proxy.stub_status import StubStatus, StubStatusError, parse_stub_status
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.runtime import logs

log = logging.getLogger("sidecars.metrics_proxy")

T = TypeVar("T")

STUB_STATUS = "stub_status"


class SingleFlight(Generic[T]):
    """``run()`` starts ``produce`` unless a call is already in flight, then waits for that
    one. A caller that goes away (client disconnect) does not cancel the shared call."""

    def __init__(self, produce: Callable[[], Awaitable[T]]) -> None:
        self._produce = produce
        self._task: asyncio.Task[T] | None = None

    async def run(self) -> T:
        task = self._task
        if task is None:
            task = self._task = asyncio.ensure_future(self._produce())
            task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[T]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled():
            task.exception()  # retrieved, so a failure nobody awaited is not logged as lost


class Snapshot:
    """The families of one round, with each encoding rendered at most once."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = families
        self._bodies: dict[tuple[Format, bool], bytes] = {}

    def body(self, fmt: Format, compressed: bool) -> bytes:
        key = (fmt, compressed)
        body = self._bodies.get(key)
        if body is None:
            body = render(self.families, fmt)
            if compressed:
                body = gzip.compress(body, compresslevel=1, mtime=0)
            self._bodies[key] = body
        return body


def registry_families(registry: CollectorRegistry) -> list[Family]:
    families = []
    for metric in registry.collect():
        family = convert_metric(metric)
        if family is not None:
            families.append(family)
    return families


class SourceState:
    """Logs a source's failures when they start and end, not once per scrape."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.failing: str | None = None

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


class Upstream:
    def __init__(self, name: str, fetcher: Fetcher) -> None:
        self.name = name
        self.fetcher = fetcher
        self.state = SourceState(name)


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
        else:
            self._stub_state.ok()
        self.telemetry.fetched(STUB_STATUS, time.perf_counter() - started, error)
        return status

    async def _read_upstream(self, upstream: Upstream) -> tuple[str, list[Family]] | None:
        started = time.perf_counter()
        parsed = error = None
        try:
            fetched = await upstream.fetcher.get()
            parsed = parse_exposition(fetched.body, fetched.content_type)
        except FetchError as exc:
            error = exc.reason
            upstream.state.failed(exc.reason, exc.detail)
        except ExpositionError as exc:
            error = "parse"
            upstream.state.failed(error, f"{upstream.fetcher.target}: {exc}")
        else:
            upstream.state.ok()
        self.telemetry.fetched(upstream.name, time.perf_counter() - started, error)
        self.telemetry.upstream_up[upstream.name] = parsed is not None
        if parsed is None:
            return None
        if parsed.unsupported:
            self.telemetry.dropped_series(upstream.name, "unsupported_type", parsed.unsupported)
        label = ((self.merge_label, upstream.name),) if self.merge_label else ()
        return upstream.name, rename(parsed.families, self.merge_prefix, label)

    async def _collect(self) -> Snapshot:
        self.telemetry.collections += 1
        if self.upstreams:
            status, *fetched = await asyncio.gather(
                self._read_stub_status(), *(self._read_upstream(u) for u in self.upstreams)
            )
        else:  # the common case; gather would cost a task per scrape
            status, fetched = await self._read_stub_status(), []
        own = stub_status_families(status)
        if self.access_log is not None:
            own += self.access_log.families()
        own += self.telemetry.families()
        own += registry_families(self.registry)
        upstream = [item for item in fetched if item is not None]
        families = own
        if upstream:  # our own families never collide among themselves
            merged = merge(own, upstream)
            for (source, reason), count in merged.dropped.items():
                self.telemetry.dropped_series(source, reason, count)
            families = merged.families
        return Snapshot([add_labels(family, self.const_labels) for family in families])

    async def close(self) -> None:
        await self.stub_status.close()
        for upstream in self.upstreams:
            await upstream.fetcher.close()
