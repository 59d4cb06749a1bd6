"""HTTP NDJSON sink: POST each batch as newline-delimited JSON (gzip), with an idempotency key.

Guarantee: at-least-once; with a receiver that de-duplicates by ``Idempotency-Key``, exactly
once. The key is ``<fingerprint>:<start>-<end>`` of the batch in its file, and a batch re-sent
after a restart covers the same lines (its boundary was made durable before the first send),
so it carries the same key.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from sidecars.log_shipper.encode import ndjson
from sidecars.log_shipper.sinks.base import Batch, Record
from sidecars.log_shipper.sinks.httpcommon import encode_body, post
from sidecars.log_shipper.sinks.options import SinkOptions


class HttpSink:
    name = "http"

    def __init__(self, url: str, options: SinkOptions) -> None:
        self.url = url
        self.options = options
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.send_timeout),
            headers={"User-Agent": self.options.user_agent, **self.options.http_headers},
        )

    async def send(self, batch: Sequence[Record]) -> None:
        assert self._session is not None, "start() first"
        assert isinstance(batch, Batch)
        body, headers = await encode_body(ndjson(batch), self.options.gzip_level)
        headers["Content-Type"] = "application/x-ndjson"
        headers["Idempotency-Key"] = batch.key
        await post(self._session, self.url, body, headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
