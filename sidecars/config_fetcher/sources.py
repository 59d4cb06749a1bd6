"""Sources: where config comes from. Local paths (files, directories, mounted ConfigMaps) here,
HTTP(S) URLs in http_source.py (imported only for URL sources, so an init container reading a
ConfigMap never loads aiohttp). Each returns raw bytes (or, for a directory, a ready bundle) and
classifies every failure as transient or not (see errors.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sidecars.config_fetcher.errors import FetchError, VerifyError
from sidecars.config_fetcher.members import Entry, Limits, TreeBuilder


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


def _read_regular(path: str, size: int) -> bytes:
    """Read a file that lstat called regular and ``size`` bytes long. O_NOFOLLOW and O_NONBLOCK:
    a name swapped for a link or a fifo since is refused rather than followed or blocked on;
    growth since is refused rather than read past the size already admitted."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FetchError(f"source {path} changed while being read", transient=True)
        chunks = []
        remaining = size + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != size:
        raise FetchError(f"source {path} changed while being read", transient=True)
    return data


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
            real = os.path.realpath(self.path)  # a ConfigMap key is a link through ..data
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                raise VerifyError(f"source {self.path} is not a regular file or directory")
            if st.st_size > self.max_bytes:
                raise VerifyError(
                    f"{self.path}: {st.st_size} bytes exceeds --max-bytes {self.max_bytes}"
                )
            data = _read_regular(real, st.st_size)
            return Fetched(origin=str(self.path), name=self.name, data=data)
        except FileNotFoundError as exc:
            missing = exc.filename or self.path
            raise FetchError(f"source {missing} does not exist", transient=True) from None
        except PermissionError as exc:
            raise FetchError(
                f"cannot read source {exc.filename}: permission denied", transient=False
            ) from None
        except OSError as exc:
            raise FetchError(f"cannot read source {self.path}: {exc}", transient=True) from None

    def _read_dir(self) -> dict[str, Entry]:
        """The tree below the directory, any depth, through the same member checks as an
        archive (members.py): directories, regular files, and symlinks kept as symlinks when
        they resolve inside the tree (an absolute or escaping one is refused, never followed:
        following it would publish whatever it names, the fetcher's own secrets included).
        Fifos, sockets and devices are refused. Entries named ``..*`` are skipped (kubelet's)."""
        root = self.path
        if (root / "..data").is_symlink():
            root = root / "..data"
        # Resolved once: a swap of ..data (or of a git-sync style root link) while we read
        # cannot mix two versions.
        root = Path(os.path.realpath(root))
        builder = TreeBuilder(
            Limits(max_total_bytes=self.max_bytes, total_setting="--max-bytes"),
            what="source entry",
        )
        self._walk(root, "", builder)
        if not any(e.kind == "file" for e in builder.entries.values()):
            raise FetchError(f"source directory {self.path} has no files", transient=True)
        return builder.finish()

    def _walk(self, directory: Path, prefix: str, builder: TreeBuilder) -> None:
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda e: e.name)
        for child in children:
            if child.name.startswith(".."):
                continue
            rel = prefix + child.name
            st = child.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                builder.add_symlink(builder.admit(rel), os.readlink(child.path))
            elif stat.S_ISDIR(st.st_mode):
                builder.add_dir(builder.admit(rel))
                self._walk(Path(child.path), rel + "/", builder)
            elif stat.S_ISREG(st.st_mode):
                path = builder.admit(rel, st.st_size)  # refused before reading when too large
                data = _read_regular(child.path, st.st_size)
                builder.add_file(path, data, executable=bool(st.st_mode & 0o111))
            else:
                raise VerifyError(f"source entry {rel!r} is a device, fifo, socket or special file")

    def forget_etag(self) -> None:
        """Local sources have no ETag; present for interface symmetry with HttpSource."""

    async def close(self) -> None:
        return None
