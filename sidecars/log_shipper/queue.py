"""A FIFO of batches bounded by the bytes they cover, not by their count.

``put`` waits while the queue is full, which stops the reader that feeds it: that is the
backpressure that bounds memory with any backlog on disk. A batch bigger than the whole bound is
still let in when the queue is empty, so nothing can wedge.
"""

from __future__ import annotations

import asyncio
from collections import deque

from sidecars.log_shipper.sinks.base import Batch


class ByteQueue:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[tuple[Batch, int]] = deque()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, batch: Batch, generation: int) -> None:
        size = batch.nbytes
        async with self._changed:
            await self._changed.wait_for(
                lambda: not self._items or self.bytes + size <= self.max_bytes
            )
            self._items.append((batch, generation))
            self.bytes += size
            self._changed.notify_all()

    async def get(self) -> tuple[Batch, int]:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            batch, generation = self._items.popleft()
            self.bytes -= batch.nbytes
            self._changed.notify_all()
            return batch, generation
