"""stdout sink: the lines as JSON objects on the shipper's stdout (``kubectl logs`` shows the
access log structured). Same objects as the HTTP sink's NDJSON.

Guarantee: at-least-once. A batch counts as delivered once written to the stdout pipe, and
that is recorded in the state file before the next batch is written, so after a crash at most
the batch being written is written again (nothing downstream de-duplicates it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from sidecars.log_shipper.encode import ndjson
from sidecars.log_shipper.sinks.base import Batch, Record, SinkError
from sidecars.log_shipper.sinks.options import SinkOptions


@contextlib.contextmanager
def _log_handlers_locked() -> Iterator[None]:
    """Hold the stdout log handlers' locks: the part's own JSON log lines go to the same stdout,
    and a log line must never land in the middle of a shipped one."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if getattr(handler, "stream", None) in (sys.stdout, sys.__stdout__)
    ]
    for handler in handlers:
        handler.acquire()
    try:
        for handler in handlers:
            handler.flush()
        yield
    finally:
        for handler in reversed(handlers):
            handler.release()


class StdoutSink:
    name = "stdout"
    deduplicates = False

    def __init__(self, url: str | None = None, options: SinkOptions | None = None) -> None:
        self.options = options or SinkOptions()
        self._fd = sys.stdout.fileno()

    async def start(self) -> None:
        pass

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        with _log_handlers_locked():
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    async def prepare(self, batch: Batch) -> bytes:
        return ndjson(batch)

    async def deliver(self, prepared: bytes) -> None:
        try:
            # A blocked pipe (slow reader) must not freeze the event loop.
            await asyncio.to_thread(self._write, prepared)
        except OSError as exc:
            raise SinkError(f"stdout: {exc.strerror or exc}", retryable=True) from exc

    async def send(self, batch: Sequence[Record]) -> None:
        assert isinstance(batch, Batch)
        await self.deliver(await self.prepare(batch))

    async def close(self) -> None:
        pass
