"""What the HTTP-based sinks (Loki, NDJSON) share: one POST, its outcome as a SinkError."""

from __future__ import annotations

import asyncio
import email.utils
import time
import zlib
from collections.abc import Iterable

import aiohttp

from sidecars.log_shipper.sinks.base import SinkError

# 408 and 429 ask to come back later; 5xx are the server's trouble. Any other 4xx says the
# batch itself is unacceptable: sending it again cannot help.
_RETRY_STATUSES = frozenset({408, 425, 429})


def classify(status: int, retry_after: str | None = None) -> SinkError | None:
    if 200 <= status < 300:
        return None
    retryable = status in _RETRY_STATUSES or status >= 500 or status < 200
    return SinkError(
        f"http_{status}", retryable=retryable, retry_after=parse_retry_after(retry_after)
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def gzip(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
    return compressor.compress(data) + compressor.flush()


Body = tuple[bytes, dict[str, str]]  # the request body and its Content-Encoding header


async def encode_body(data: bytes, level: int) -> Body:
    """The body and its Content-Encoding header; compressed on a worker thread (zlib releases
    the GIL, so compression overlaps with reading the next lines)."""
    if level <= 0:
        return data, {}
    return await asyncio.to_thread(gzip, data, level), {"Content-Encoding": "gzip"}


async def encode_pieces(pieces: Iterable[bytes], level: int) -> Body:
    """``encode_body(b"".join(pieces), level)`` without holding the whole uncompressed body:
    each piece is compressed on a worker thread while the next one is being encoded."""
    if level <= 0:
        return b"".join(pieces), {}
    loop = asyncio.get_running_loop()
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    out: list[bytes] = []
    pending: asyncio.Future[bytes] | None = None
    for piece in pieces:  # the next piece is encoded here while the previous one compresses
        if pending is not None:
            out.append(await pending)
        # One call at a time on the compressor, in order: the previous one has returned.
        pending = loop.run_in_executor(None, compressor.compress, piece)
    if pending is not None:
        out.append(await pending)
    out.append(compressor.flush())
    return b"".join(out), {"Content-Encoding": "gzip"}


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> None:
    """POST and raise SinkError unless the answer is 2xx."""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            error = classify(response.status, response.headers.get("Retry-After"))
            if error is not None:
                detail = (await response.content.read(300)).decode("utf-8", "replace").strip()
                error.args = (f"{error.reason}: {detail}" if detail else error.reason,)
                raise error
            await response.read()
    except SinkError:
        raise
    except TimeoutError:
        raise SinkError("timeout", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise SinkError("connection", retryable=True) from exc
    except OSError as exc:
        raise SinkError("connection", retryable=True) from exc
