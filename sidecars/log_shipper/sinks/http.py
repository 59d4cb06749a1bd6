"""HTTP NDJSON sink: POST each batch as newline-delimited JSON (gzip), with an idempotency key.

Guarantee: at-least-once; with a receiver that de-duplicates by ``Idempotency-Key``, exactly
once. The key is ``<fingerprint>:<start>-<end>`` of the batch in its file, and a batch re-sent
after a restart covers the same lines (its boundary was made durable before the first send),
so it carries the same key.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from sidecars.log_shipper.encode import ndjson_pieces
from sidecars.log_shipper.sinks.base import Batch, Record
from sidecars.log_shipper.sinks.compression import Body, encode_pieces
from sidecars.log_shipper.sinks.httpcommon import post
from sidecars.log_shipper.sinks.options import SinkOptions


class HttpSink:
    name = "http"
    deduplicates = True  # by Idempotency-Key, at a receiver that honours it

    def __init__(self, url: str, options: SinkOptions) -> None:
        self.url = url
        self.options = options
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.send_timeout),
            headers={"User-Agent": self.options.user_agent, **self.options.http_headers},
        )

    async def prepare(self, batch: Batch) -> Body:
        body, headers = await encode_pieces(ndjson_pieces(batch), self.options.gzip_level)
        headers["Content-Type"] = "application/x-ndjson"
        headers["Idempotency-Key"] = batch.key
        return body, headers

    async def deliver(self, prepared: Body) -> None:
        assert self._session is not None, "start() first"
        await post(self._session, self.url, *prepared)

    async def send(self, batch: Sequence[Record]) -> None:
        assert isinstance(batch, Batch)
        await self.deliver(await self.prepare(batch))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
