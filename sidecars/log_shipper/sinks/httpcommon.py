"""What the HTTP-based sinks (Loki, NDJSON) share: one kept-alive connection to the URL, the
POST of a prepared body, and its outcome as a SinkError."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

from sidecars.log_shipper.sinks.base import Batch, Record, SinkError
from sidecars.log_shipper.sinks.compression import Body
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.runtime import http11

# 408 and 429 ask to come back later; 5xx are the server's trouble; a redirect is a sink URL
# to correct (logged with its Location), and dropping the batch would lose it. Any other 4xx
# says the batch itself is unacceptable: sending it again cannot help.
_RETRY_STATUSES = frozenset({408, 425, 429})
_DETAIL_BYTES = 300  # of an error answer's body, for the log line


def classify(status: int, retry_after: str | None = None) -> SinkError | None:
    if 200 <= status < 300:
        return None
    retryable = status < 400 or status in _RETRY_STATUSES or status >= 500
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


def _failed(reason: str, detail: str) -> SinkError:
    error = SinkError(reason, retryable=True)
    error.args = (f"{reason}: {detail}",)
    return error


class HttpPostSink(ABC):
    """A sink that POSTs each prepared batch to one URL; subclasses define ``prepare``."""

    deduplicates = True  # receivers honour Idempotency-Key (Loki's sink overrides it)

    def __init__(self, url: str, options: SinkOptions, headers: dict[str, str]) -> None:
        self.url = url
        self.options = options
        self._headers = {"User-Agent": options.user_agent, **headers}
        self._client: http11.Client | None = None

    async def start(self) -> None:
        self._client = http11.Client.for_url(
            self.url, headers=self._headers, ca_file=self.options.ca_file
        )

    @abstractmethod
    async def prepare(self, batch: Batch) -> Body:
        """The batch's body (uncompressed) and its headers."""

    async def deliver(self, prepared: Body) -> None:
        """POST and raise SinkError unless the answer is 2xx."""
        assert self._client is not None, "start() first"
        body, headers = prepared
        try:
            async with asyncio.timeout(self.options.send_timeout):
                response = await self._client.post(body, headers, max_body=_DETAIL_BYTES)
        except TimeoutError:
            raise _failed("timeout", f"no answer within {self.options.send_timeout:g}s") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise _failed("tls", str(exc)) from None
        except OSError as exc:
            raise _failed("connection", exc.strerror or str(exc) or type(exc).__name__) from None
        except (http11.ProtocolError, EOFError) as exc:
            raise _failed("protocol", str(exc) or "answer cut off") from None
        error = classify(response.status, response.headers.get("retry-after"))
        if error is not None:
            detail = response.body.decode("utf-8", "replace").strip()
            location = response.headers.get("location")
            if location:
                detail = f"redirected to {location}; set the sink's URL to where it points"
            error.args = (f"{error.reason}: {detail}" if detail else error.reason,)
            raise error

    async def send(self, batch: Sequence[Record]) -> None:
        assert isinstance(batch, Batch)
        await self.deliver(await self.prepare(batch))

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
