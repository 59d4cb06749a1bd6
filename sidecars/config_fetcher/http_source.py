"""The HTTP(S) source: GET with ETag, timeouts, bounded redirects, size caps, bearer token."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import aiohttp

from sidecars import __version__
from sidecars.config_fetcher.errors import FetchError, VerifyError
from sidecars.config_fetcher.sources import Fetched

_CHUNK = 64 * 1024


def _transient_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class HttpSource:
    """GET with ETag/If-None-Match, a total timeout, bounded redirects, a size cap enforced while
    streaming, an optional bearer token re-read from its file on every request (projected
    service-account tokens rotate) and an optional CA file."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        timeout: float,
        max_bytes: int,
        max_redirects: int,
        token_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        etag_max_age: float = 300.0,
    ) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.token_file = token_file
        self.ssl_context = ssl_context
        self.etag_max_age = etag_max_age
        self.etag: str | None = None
        self._etag_since = 0.0
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"sidecars-config-fetcher/{__version__}"}
        # nginx's static ETag is mtime (whole seconds) + size: a same-size change within the same
        # second keeps it, and a 304 would hide that change forever. So an ETag is trusted for
        # --etag-max-age only; then one unconditional GET (the digest still avoids a republish).
        if self.etag and time.monotonic() - self._etag_since < self.etag_max_age:
            headers["If-None-Match"] = self.etag
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise FetchError(
                    f"cannot read bearer token file {self.token_file}: {exc.strerror or exc}",
                    transient=False,
                ) from None
            if not token:
                raise FetchError(f"bearer token file {self.token_file} is empty", transient=False)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def fetch(self) -> Fetched | None:
        """The new content, or None when the origin answered 304 Not Modified."""
        if self._session is None:
            # trust_env: HTTP(S)_PROXY / NO_PROXY from the container's env are honoured, as
            # users behind corporate proxies expect of any fetcher.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=4),
                trust_env=True,
            )
        headers = self._headers()
        where = f"GET {self.url}"
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.get(
                    self.url,
                    headers=headers,
                    max_redirects=self.max_redirects,
                ) as response:
                    if response.status == 304:
                        return None
                    if response.status != 200:
                        raise FetchError(
                            f"{where}: HTTP {response.status} {response.reason or ''}".rstrip(),
                            transient=_transient_status(response.status),
                        )
                    data = await self._read_body(response, where)
                    etag = response.headers.get("ETag")
        except TimeoutError:
            raise FetchError(
                f"{where}: timed out after {self.timeout:g}s", transient=True
            ) from None
        except aiohttp.TooManyRedirects:
            raise FetchError(
                f"{where}: more than {self.max_redirects} redirects", transient=False
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FetchError(
                f"{where}: TLS verification failed: {exc.certificate_error}", transient=False
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError(f"{where}: TLS error: {exc}", transient=False) from None
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            raise FetchError(f"{where}: cannot connect: {reason}", transient=True) from None
        except aiohttp.ClientPayloadError as exc:
            raise FetchError(f"{where}: body incomplete: {exc}", transient=True) from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"{where}: {type(exc).__name__}: {exc}", transient=True) from None
        self.etag, self._etag_since = etag, time.monotonic()
        return Fetched(origin=self.url, name=self.name, data=data, etag=etag)

    async def _read_body(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise VerifyError(
                f"{where}: Content-Length {declared} exceeds --max-bytes {self.max_bytes}"
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            total += len(chunk)
            if total > self.max_bytes:
                raise VerifyError(f"{where}: body exceeds --max-bytes {self.max_bytes}")
            chunks.append(chunk)
        data = b"".join(chunks)
        # Content-Encoding changes the length on the wire, so only compare identity bodies.
        if (
            declared is not None
            and not response.headers.get("Content-Encoding")
            and total != declared
        ):
            raise FetchError(
                f"{where}: body incomplete: got {total} of {declared} bytes", transient=True
            )
        return data

    def forget_etag(self) -> None:
        self.etag = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
