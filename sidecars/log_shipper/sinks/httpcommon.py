"""What the HTTP-based sinks (Loki, NDJSON) share: one kept-alive connection to the URL, the
POST of a prepared body, and its outcome as a SinkError."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from sidecars.log_shipper.sinks.base import Batch, Record, SinkError
from sidecars.log_shipper.sinks.compression import Body
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.runtime import http11
from sidecars.runtime.secrets import FileSecret

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


Secret = str | FileSecret[str]


def _reveal(secret: Secret) -> str:
    return secret if isinstance(secret, str) else secret.get()


@dataclass(frozen=True)
class Credentials:
    """A sink's Authorization and secret headers, worked out again for every request so that a
    rotated Secret file is used from the next batch on (a stat per file per batch)."""

    user: str | None = None
    password: Secret | None = None
    bearer: Secret | None = None
    headers: tuple[FileSecret[tuple[str, str]], ...] = ()

    @property
    def from_files(self) -> bool:
        secrets = (self.password, self.bearer, *self.headers)
        return any(isinstance(secret, FileSecret) for secret in secrets)

    def request_headers(self) -> dict[str, str]:
        headers = dict(secret.get() for secret in self.headers)
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {_reveal(self.bearer)}"
        elif self.user is not None:
            password = _reveal(self.password) if self.password is not None else ""
            pair = f"{self.user}:{password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """The URL without its ``user:password@`` part, and that user and password (unquoted)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None, None
    netloc = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    password = unquote(parts.password) if parts.password is not None else None
    return clean, unquote(parts.username), password


def _failed(reason: str, detail: str) -> SinkError:
    error = SinkError(reason, retryable=True)
    error.args = (f"{reason}: {detail}",)
    return error


class HttpPostSink(ABC):
    """A sink that POSTs each prepared batch to one URL; subclasses define ``prepare``."""

    deduplicates = True  # receivers honour Idempotency-Key (Loki's sink overrides it)

    def __init__(
        self,
        url: str,
        options: SinkOptions,
        headers: dict[str, str],
        credentials: Credentials | None = None,
    ) -> None:
        """``url`` may carry ``user:password@``; ``credentials`` (built by the subclass from
        that user and password and the settings) give Authorization at each request."""
        self.url = url
        self.options = options
        self._headers = {"User-Agent": options.user_agent, **headers}
        self._credentials = credentials or Credentials()
        self._client: http11.Client | None = None

    async def start(self) -> None:
        # The userinfo is the subclass's to turn into credentials, not the client's.
        self._client = http11.Client.for_url(
            split_userinfo(self.url)[0], headers=self._headers, ca_file=self.options.ca_file
        )

    @abstractmethod
    async def prepare(self, batch: Batch) -> Body:
        """The batch's body (uncompressed) and its headers."""

    async def deliver(self, prepared: Body) -> None:
        """POST and raise SinkError unless the answer is 2xx."""
        assert self._client is not None, "start() first"
        body, headers = prepared
        headers = {**headers, **self._credentials.request_headers()}
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
        if error is not None and response.status in (401, 403) and self._credentials.from_files:
            # Rotation is not instant everywhere (kubelet syncs a Secret volume within about a
            # minute): the destination may already want the new credential. Retry rather than
            # drop; the next attempt reads the file again.
            error.retryable = True
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
