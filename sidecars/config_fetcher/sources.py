"""Sources: where config comes from. Local paths (files, directories, mounted ConfigMaps) here,
HTTP(S) URLs in http_source.py (imported only for URL sources, so an init container reading a
ConfigMap never loads aiohttp). Each returns raw bytes (or, for a directory, a ready bundle) and
classifies every failure as transient or not (see errors.py)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sidecars.config_fetcher.bundle import Entry, check_name
from sidecars.config_fetcher.errors import FetchError, VerifyError


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
