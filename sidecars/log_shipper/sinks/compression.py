"""gzip bodies for the HTTP-based sinks (Loki, NDJSON).

Levels 1-3 use ISA-L's igzip (the ``isal`` package, a dependency of sidecars): on nginx NDJSON
its level 1 is about 4x faster than zlib's level 1 at a slightly better ratio, fast enough to
run on the event loop's thread. Levels 4-9 (and any level where ``isal`` cannot be installed)
use zlib, on a worker thread (zlib releases the GIL). Either way the body is one standard gzip
member.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    from isal import isal_zlib
except ImportError:  # no wheel for this platform: zlib does the same job, more slowly
    isal_zlib = None

_GZIP = 31  # wbits for the gzip container
_ISAL_LEVELS = range(1, 4)

# The request body (bytes, or a bytearray built in place) and its Content-Encoding header.
Body = tuple[bytes | bytearray, dict[str, str]]


_executor: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    """One thread for all compression: its buffers come from one malloc arena, reused batch
    after batch, instead of one arena per thread of the loop's default pool."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecars-gzip")
    return _executor


def compressor(level: int, *, prefer_isal: bool = True) -> Any:
    """A compression object writing one gzip member at ``level`` (1-9)."""
    if prefer_isal and isal_zlib is not None and level in _ISAL_LEVELS:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP)
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP)


def gzip(data: bytes, level: int, *, prefer_isal: bool = True) -> bytes:
    packer = compressor(level, prefer_isal=prefer_isal)
    return packer.compress(data) + packer.flush()  # type: ignore[no-any-return]


async def encode_pieces(pieces: Iterable[bytes], level: int, *, prefer_isal: bool = True) -> Body:
    """``b"".join(pieces)`` gzipped (``level`` 0: as is), with its Content-Encoding header.

    The uncompressed body is never held whole: pieces are compressed as the caller's iterator
    makes them. igzip compresses a piece in well under a millisecond, less than handing it to
    a thread would cost, so it runs here, yielding to the loop between pieces; zlib (levels
    4-9, or no isal) runs on a worker thread while the next piece is being made."""
    if level <= 0:
        return b"".join(pieces), {}
    packer = compressor(level, prefer_isal=prefer_isal)
    # Appended in place: a list of parts joined at the end held the body twice for a moment,
    # while the batch's lines were still held too (the peak of a backlog drain).
    out = bytearray()
    if _is_isal(packer):
        for piece in pieces:
            out += packer.compress(piece)
            await asyncio.sleep(0)
    else:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] | None = None
        for piece in pieces:
            if pending is not None:
                out += await pending
            # One call at a time on the compressor, in order: the previous one has returned.
            pending = loop.run_in_executor(_worker(), packer.compress, piece)
        if pending is not None:
            out += await pending
    out += packer.flush()
    return out, {"Content-Encoding": "gzip"}


def _is_isal(packer: Any) -> bool:
    return isal_zlib is not None and type(packer).__module__.startswith("isal")
