"""Sources: where config comes from. HTTP(S) URLs and local paths (files, directories,
mounted ConfigMaps). Each returns raw bytes (or, for a directory, a ready bundle) and classifies
every failure as transient or not (see errors.py)."""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from sidecars import __version__
from sidecars.config_fetcher.bundle import Entry, check_name
from sidecars.config_fetcher.errors import FetchError, VerifyError

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    origin: str  # the URL or path, for logs and the manifest
    name: str  # file name to publish a single-file source under
    data: bytes | None = None  # raw bytes of a file or archive
    files: dict[str, Entry] | None = None  # a directory source, already a bundle
    etag: str | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return sum(len(e.data) for e in (self.files or {}).values())


def url_basename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


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
    ) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.token_file = token_file
        self.ssl_context = ssl_context
        self.etag: str | None = None
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"sidecars-config-fetcher/{__version__}"}
        if self.etag:
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
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=4),
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
        self.etag = etag
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


class LocalSource:
    """A file or a directory on a volume, e.g. a mounted ConfigMap. For a ConfigMap the
    kubelet's own ``..data`` symlink is resolved once, so a swap in the middle of reading
    cannot give us a mix of two ConfigMap versions."""

    def __init__(self, path: Path, *, name: str, max_bytes: int) -> None:
        self.path = path
        self.name = name
        self.max_bytes = max_bytes

    async def fetch(self) -> Fetched:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Fetched:
        try:
            if self.path.is_dir():
                return Fetched(origin=str(self.path), name=self.name, files=self._read_dir())
            size = self.path.stat().st_size
            if size > self.max_bytes:
                raise VerifyError(f"{self.path}: {size} bytes exceeds --max-bytes {self.max_bytes}")
            return Fetched(origin=str(self.path), name=self.name, data=self.path.read_bytes())
        except FileNotFoundError:
            raise FetchError(f"source {self.path} does not exist", transient=True) from None
        except PermissionError as exc:
            raise FetchError(
                f"cannot read source {exc.filename}: permission denied", transient=False
            ) from None
        except OSError as exc:
            raise FetchError(f"cannot read source {self.path}: {exc}", transient=True) from None

    def _read_dir(self) -> dict[str, Entry]:
        root = self.path
        if (root / "..data").is_symlink():
            root = (root / "..data").resolve(strict=True)
        files: dict[str, Entry] = {}
        total = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".."))
            for filename in sorted(filenames):
                if filename.startswith(".."):
                    continue
                full = Path(dirpath, filename)
                rel = full.relative_to(root).as_posix()
                if not full.exists():  # a dangling symlink
                    continue
                data = full.read_bytes()
                total += len(data)
                if total > self.max_bytes:
                    raise VerifyError(f"{self.path}: content exceeds --max-bytes {self.max_bytes}")
                files[check_name(rel)] = Entry("file", data)
        if not files:
            raise FetchError(f"source directory {self.path} has no files", transient=True)
        return files

    def forget_etag(self) -> None:
        """Local sources have no ETag; present for interface symmetry with HttpSource."""

    async def close(self) -> None:
        return None
