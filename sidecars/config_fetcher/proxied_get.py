"""A GET through the proxy the environment names (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), with
aiohttp: its client speaks CONNECT tunnels, proxy authentication and redirects across them.

Imported only when a proxy applies to the source URL (http_source.py), so a fetcher that
reaches its origin directly never loads aiohttp (about 7.5 MiB resident: bench/pod_tax).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable

import aiohttp

from sidecars.config_fetcher.errors import FetchError, VerifyError

_CHUNK = 64 * 1024


class ProxiedGet:
    """GETs over one aiohttp session (kept between checks), the same limits and errors as the
    direct path: a total timeout, bounded redirects, a size cap enforced while streaming."""

    def __init__(
        self,
        *,
        timeout: float,
        max_bytes: int,
        max_redirects: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def get(
        self, url: str, headers: dict[str, str], check_status: Callable[[int, str], None]
    ) -> tuple[bytes, str | None] | None:
        """(body, ETag) of a 200; None for 304; ``check_status(status, reason)`` raises for
        any other answer."""
        if self._session is None:
            # trust_env: HTTP(S)_PROXY / NO_PROXY from the container's env are honoured.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=4),
                trust_env=True,
            )
        where = f"GET {url}"
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.get(
                    url, headers=headers, max_redirects=self.max_redirects
                ) as response:
                    if response.status == 304:
                        return None
                    check_status(response.status, response.reason or "")
                    data = await self._read_body(response, where)
                    return data, response.headers.get("ETag")
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
