"""What the HTTP-based sinks (Loki, NDJSON) share: one POST, its outcome as a SinkError."""

from __future__ import annotations

import email.utils
import time

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
