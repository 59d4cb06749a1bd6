"""Sources: where config comes from. Local paths (files, directories, mounted ConfigMaps) here,
HTTP(S) URLs in http_source.py (imported only for URL sources, so an init container reading a
ConfigMap never loads an HTTP client). Each returns raw bytes (or, for a directory, a ready
bundle) and classifies every failure as transient or not (see errors.py)."""

from __future__ import annotations

import asyncio
import errno
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


_CHANGED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO)  # swapped for a link, ...


def _read_regular(path: str, size: int, dir_fd: int | None = None, shown: str = "") -> bytes:
    """Read a file that lstat called regular and ``size`` bytes long. O_NOFOLLOW and O_NONBLOCK:
    a name swapped for a link or a fifo since is refused rather than followed or blocked on;
    growth since is refused rather than read past the size already admitted."""
    shown = shown or path
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise FetchError(f"source {shown} changed while being read", transient=True) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FetchError(f"source {shown} changed while being read", transient=True)
        chunks = []
        remaining = size + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != size:
        raise FetchError(f"source {shown} changed while being read", transient=True)
    return data


def _open_dir(name: str, dir_fd: int | None, shown: str) -> int:
    """A directory's fd, never through a link: a name swapped for a link (or a file) since it
    was seen as a directory is refused, not followed out of the tree."""
    try:
        return os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise FetchError(f"source {shown} changed while being read", transient=True) from None
        raise


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

    def read_tree(self) -> dict[str, Entry]:
        """The directory's tree as a bundle (also used to check a published version)."""
        try:
            return self._read_dir()
        except FileNotFoundError as exc:
            missing = exc.filename or self.path
            raise FetchError(f"{missing} does not exist", transient=True) from None
        except OSError as exc:
            raise FetchError(f"cannot read {self.path}: {exc}", transient=True) from None

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
        fd = _open_dir(str(root), None, str(root))
        try:
            self._walk(fd, root, "", builder)
        finally:
            os.close(fd)
        if not any(e.kind == "file" for e in builder.entries.values()):
            raise FetchError(f"source directory {self.path} has no files", transient=True)
        return builder.finish()

    def _walk(self, dir_fd: int, shown: Path, prefix: str, builder: TreeBuilder) -> None:
        """Everything below the directory open as ``dir_fd``, named relative to it: each name
        is looked at once (lstat) and then opened without following links, so nothing the
        writer swaps in meanwhile is followed."""
        with os.scandir(dir_fd) as scan:
            names = sorted(e.name for e in scan)
        for name in names:
            if name.startswith(".."):
                continue
            rel = prefix + name
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                builder.add_symlink(builder.admit(rel), os.readlink(name, dir_fd=dir_fd))
            elif stat.S_ISDIR(st.st_mode):
                builder.add_dir(builder.admit(rel))
                fd = _open_dir(name, dir_fd, str(shown / rel))
                try:
                    self._walk(fd, shown, rel + "/", builder)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                path = builder.admit(rel, st.st_size)  # refused before reading when too large
                data = _read_regular(name, st.st_size, dir_fd, str(shown / rel))
                builder.add_file(path, data, executable=bool(st.st_mode & 0o111))
            else:
                raise VerifyError(f"source entry {rel!r} is a device, fifo, socket or special file")

    def forget_etag(self) -> None:
        """Local sources have no ETag; present for interface symmetry with HttpSource."""

    async def close(self) -> None:
        return None
