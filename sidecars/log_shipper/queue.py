"""A FIFO of batches bounded by the bytes they cover, not by their count.

``put`` waits while the queue is full, and the reader asks ``has_room`` before each read:
that is the backpressure that bounds memory with any backlog on disk. A batch taken with
``get`` still counts until the sender ``release``s it, i.e. until it no longer holds the
batch's lines (once the sink has encoded it), so the bound covers every batch held as lines. A
batch bigger than the whole bound is still let in when nothing else is counted, so nothing can
wedge.
"""

from __future__ import annotations

import asyncio
from collections import deque

from sidecars.log_shipper.sinks.base import Batch


class ByteQueue:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # queued plus taken and not yet released
        self._items: deque[tuple[Batch, int]] = deque()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, size: int) -> bool:
        """Whether ``put`` of a batch of ``size`` bytes would return without waiting."""
        return self.bytes == 0 or self.bytes + size <= self.max_bytes

    async def until_fits(self, size: int) -> None:
        """Until ``fits(size)``; changes nothing, so it may be cancelled at any point."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.fits(size))

    async def put(self, batch: Batch, generation: int) -> None:
        size = batch.nbytes
        async with self._changed:
            await self._changed.wait_for(lambda: self.fits(size))
            self._items.append((batch, generation))
            self.bytes += size
            self._changed.notify_all()

    async def get(self) -> tuple[Batch, int]:
        """The oldest batch; its bytes stay counted until ``release(batch.nbytes)``."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            return self._items.popleft()

    def has_room(self, pending: int) -> bool:
        """Whether a reader holding ``pending`` bytes of an unfinished batch may read on."""
        return self.bytes == 0 or self.bytes + pending < self.max_bytes

    async def until_room(self, pending: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.has_room(pending))

    async def release(self, size: int) -> None:
        async with self._changed:
            self.bytes -= size
            self._changed.notify_all()
