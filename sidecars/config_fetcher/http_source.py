"""The HTTP(S) source: GET with ETag, timeouts, bounded redirects, size caps, bearer token.

Direct to the origin it speaks through runtime/http11.py (the client the other parts use, on
httptools), one kept-alive connection to the configured URL: aiohttp's client, which this
source used before, costs a process about 7.5 MiB resident (bench/pod_tax), a third of the
sidecar's memory. When the environment names a proxy for the URL (HTTP_PROXY, HTTPS_PROXY,
NO_PROXY, as users behind corporate proxies expect), the GET goes through aiohttp instead
(proxied_get.py), which speaks CONNECT tunnels and proxy authentication.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

from sidecars import __version__
from sidecars.config_fetcher.errors import FetchError, VerifyError
from sidecars.config_fetcher.sources import Fetched
from sidecars.runtime import http11

if TYPE_CHECKING:
    from sidecars.config_fetcher.proxied_get import ProxiedGet

_REDIRECTS = (301, 302, 303, 307, 308)


def _transient_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (NO_PROXY honoured), or None."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.netloc.rpartition("@")[2]):
        return None
    return proxy


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
        self._client: http11.Client | None = None  # to self.url, kept alive between checks
        self._proxied: ProxiedGet | None = None

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
            if not token.isascii() or not token.isprintable():
                # A line break would end the header and start another one of the file's choosing.
                raise FetchError(
                    f"bearer token file {self.token_file} holds a line break or a character "
                    "a header cannot carry",
                    transient=False,
                )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def fetch(self) -> Fetched | None:
        """The new content, or None when the origin answered 304 Not Modified."""
        headers = self._headers()
        where = f"GET {self.url}"

        def check_status(status: int, reason: str) -> None:
            if status != 200:
                raise FetchError(
                    f"{where}: HTTP {status} {reason}".rstrip(),
                    transient=_transient_status(status),
                )

        if proxy_for(self.url) is not None:
            if self._proxied is None:
                from sidecars.config_fetcher.proxied_get import ProxiedGet

                self._proxied = ProxiedGet(
                    timeout=self.timeout,
                    max_bytes=self.max_bytes,
                    max_redirects=self.max_redirects,
                    ssl_context=self.ssl_context,
                )
            got = await self._proxied.get(self.url, headers, check_status)
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    got = await self._direct(headers, where, check_status)
            except TimeoutError:
                raise FetchError(
                    f"{where}: timed out after {self.timeout:g}s", transient=True
                ) from None
        if got is None:
            return None
        data, etag = got
        self.etag, self._etag_since = etag, time.monotonic()
        return Fetched(origin=self.url, name=self.name, data=data, etag=etag)

    async def _direct(
        self, headers: dict[str, str], where: str, check_status: Callable[[int, str], None]
    ) -> tuple[bytes, str | None] | None:
        url = self.url
        for _ in range(self.max_redirects + 1):
            response = await self._get(url, headers, where)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or not location:
                break
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise FetchError(f"{where}: redirected to {target[:200]!r}", transient=False)
            if _origin(target) != _origin(url):
                headers.pop("Authorization", None)  # the token is for the configured origin
            url = target
        else:
            raise FetchError(f"{where}: more than {self.max_redirects} redirects", transient=False)
        if response.status == 304:
            return None
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        check_status(response.status, reason)
        return response.body, response.headers.get("etag")

    async def _get(self, url: str, headers: dict[str, str], where: str) -> http11.Response:
        own = url == self.url
        client = self._client if own else None
        if client is None:
            client = http11.Client.for_url(url, tls=self.ssl_context)
            if own:
                self._client = client
        try:
            return await client.get(self.max_bytes, headers=headers)
        except http11.TooLarge as exc:
            if str(exc).startswith("Content-Length"):
                raise VerifyError(f"{where}: {exc} exceeds --max-bytes {self.max_bytes}") from None
            raise VerifyError(f"{where}: body exceeds --max-bytes {self.max_bytes}") from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(
                f"{where}: TLS verification failed: {exc.verify_message or exc}", transient=False
            ) from None
        except ssl.SSLError as exc:
            raise FetchError(f"{where}: TLS error: {exc}", transient=False) from None
        except EOFError:
            raise FetchError(
                f"{where}: body incomplete: the origin closed the connection", transient=True
            ) from None
        except http11.ProtocolError as exc:
            raise FetchError(f"{where}: bad answer: {exc}", transient=True) from None
        except OSError as exc:
            # asyncio's strerror is "Connect call failed (...)": name the errno's meaning.
            reason = os.strerror(exc.errno) if (exc.errno or 0) > 0 else (exc.strerror or exc)
            raise FetchError(f"{where}: cannot connect: {reason}", transient=True) from None
        finally:
            if not own:
                client.close()

    def forget_etag(self) -> None:
        self.etag = None

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proxied is not None:
            await self._proxied.close()
            self._proxied = None
