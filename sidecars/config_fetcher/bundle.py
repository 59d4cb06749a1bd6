"""Turning fetched bytes into a verified, in-memory bundle of files (no I/O but reading bytes).

A bundle is what gets published: relative path -> entry. Nothing touches the shared volume
until a whole bundle has been built and verified, so a bad archive can never leave a
half-written tree behind.

An archive is read lazily, one member at a time: the gunzip is streamed into tarfile's stream
mode (``r|``) through a counter that stops at ``--max-unpacked-bytes``, and every member is
checked from its header (name, kind, count, declared size: see members.py) before any of its
data is read. Extended headers (PAX, GNU long names) are bounded before tarfile reads them, and
sparse members are refused, so neither can make the reader allocate what the caps forbid. The
only copies in memory are the fetched bytes and the unpacked files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from sidecars.config_fetcher.errors import VerifyError
from sidecars.config_fetcher.members import (
    MAX_ENTRIES,
    RESERVED_PREFIX,
    Entry,
    Limits,
    TreeBuilder,
    check_name,
    check_target,
)

__all__ = [
    "MAX_ENTRIES",
    "MAX_EXTENDED_HEADER_BYTES",
    "RESERVED_PREFIX",
    "Bundle",
    "Entry",
    "check_link",
    "check_name",
    "digest",
    "from_tar_gz",
    "sha256_hex",
    "single_file",
    "top_level_names",
]

# A PAX record holds a path, a link target, times, a few xattrs: far below this. tarfile reads
# an extended header whole into memory, so its declared size is checked before that.
MAX_EXTENDED_HEADER_BYTES = 64 * 1024
MAX_CHAINED_HEADERS = 8  # extended headers in a row before one member (GNU L + K + PAX x ...)
MAX_GLOBAL_HEADER_BYTES = 64 * 1024  # what PAX global headers (git archive's comment) may add up to
_READ_CHUNK = 64 * 1024

Bundle = Mapping[str, Entry]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(bundle: Bundle) -> str:
    """A stable digest of the whole bundle: same content, same digest, whatever the order."""
    h = hashlib.sha256()
    for path in sorted(bundle):
        entry = bundle[path]
        h.update(
            f"{entry.kind}\0{path}\0{entry.mode:o}\0{entry.target}\0{len(entry.data)}\0".encode()
        )
        h.update(entry.data)
    return h.hexdigest()


def check_link(path: str, target: str) -> str:
    """The quick textual check of one symlink target (the full one, through the tree's own
    links, is TreeBuilder.finish)."""
    check_target(path, target)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise VerifyError(f"archive member {path!r} is a symlink pointing outside: {target!r}")
    return target


def single_file(name: str, data: bytes) -> dict[str, Entry]:
    return {check_name(name): Entry("file", data)}


class _CappedStream(io.RawIOBase):
    """The decompressed archive as a stream that refuses to yield more than ``cap`` bytes."""

    def __init__(self, inner: io.BufferedIOBase, cap: int) -> None:
        self._inner = inner
        self._cap = cap
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _READ_CHUNK:
            size = _READ_CHUNK  # tarfile's stream reader asks for small blocks; never more
        data = self._inner.read(size)
        self.count += len(data)
        if self.count > self._cap:
            raise VerifyError(
                f"archive unpacks to more than {self._cap} bytes (--max-unpacked-bytes)"
            )
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _GuardedTarInfo(tarfile.TarInfo):
    """tarfile.TarInfo that refuses, before tarfile reads them, the headers that would make it
    allocate without bound: oversized or endlessly chained extended headers, sparse maps.
    ``_proc_member`` is the hook tarfile documents for subclasses (see its source)."""

    def _proc_member(self, tarfile_: tarfile.TarFile):  # type: ignore[no-untyped-def]
        state = tarfile_.header_state  # type: ignore[attr-defined]
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise VerifyError(f"archive member {self.name!r} is a sparse file (not supported)")
        if self.type in (
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
        ):
            if self.size > MAX_EXTENDED_HEADER_BYTES:
                raise VerifyError(
                    f"archive has an extended header of {self.size} bytes "
                    f"(more than {MAX_EXTENDED_HEADER_BYTES})"
                )
            state.chained += 1
            if state.chained > MAX_CHAINED_HEADERS:
                raise VerifyError(
                    f"archive has more than {MAX_CHAINED_HEADERS} extended headers in a row"
                )
            if self.type == tarfile.XGLTYPE:
                state.global_bytes += self.size
                if state.global_bytes > MAX_GLOBAL_HEADER_BYTES:
                    raise VerifyError(
                        f"archive's global headers exceed {MAX_GLOBAL_HEADER_BYTES} bytes"
                    )
        else:
            state.chained = 0
        member = super()._proc_member(tarfile_)
        if any(key.startswith("GNU.sparse.") for key in member.pax_headers):
            raise VerifyError(f"archive member {member.name!r} is a sparse file (not supported)")
        return member

    # The PAX sparse formats are parsed inside _proc_pax, before the member is returned: refuse
    # them there, so a sparse map claiming millions of regions is never read.
    def _refuse_sparse(self, next_: tarfile.TarInfo, *_: object) -> None:
        raise VerifyError(f"archive member {next_.name!r} is a sparse file (not supported)")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


@dataclass
class _HeaderState:
    chained: int = 0  # extended headers seen since the last member
    global_bytes: int = 0


class _GuardedTarFile(tarfile.TarFile):
    tarinfo = _GuardedTarInfo

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.header_state = _HeaderState()  # before super().__init__ reads the first header
        super().__init__(*args, **kwargs)


def _is_archive_root(member: tarfile.TarInfo) -> bool:
    """The archive's own root ("./" from `tar -C dir .`)."""
    return member.isdir() and member.name.strip("/.") == "" and not member.name.startswith("/")


def _read_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's data in chunks: BytesIO grows in place and hands its buffer over without a
    copy, where one read() would briefly hold the member twice."""
    handle = tar.extractfile(member)
    assert handle is not None  # isfile() guarantees a payload
    out = io.BytesIO()
    while chunk := handle.read(_READ_CHUNK):
        out.write(chunk)
    if out.tell() != member.size:
        raise VerifyError(f"archive member {member.name!r} is truncated")
    return out.getvalue()


def _corrupt(exc: BaseException) -> VerifyError:
    gz = (gzip.BadGzipFile, EOFError, zlib.error)
    if isinstance(exc, gz) or isinstance(exc.__cause__, gz) or "zlib error" in str(exc):
        detail = str(exc) or "unexpected end of compressed data"
        return VerifyError(f"corrupt gzip: {detail}")
    return VerifyError(f"corrupt tar archive: {exc}")


def from_tar_gz(
    data: bytes, *, max_unpacked: int, max_entries: int = MAX_ENTRIES
) -> dict[str, Entry]:
    """Unpack a .tar.gz into a bundle, refusing anything that could land outside ``--dest`` or
    take more memory than the caps allow."""
    builder = TreeBuilder(Limits(max_total_bytes=max_unpacked, max_entries=max_entries))
    # BytesIO over bytes shares the buffer: no copy of the fetched archive.
    stream = _CappedStream(gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb"), max_unpacked)
    try:
        with _GuardedTarFile.open(fileobj=stream, mode="r|") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # stream mode keeps every TarInfo otherwise
                _add_member(builder, tar, member)
        # Read what follows the end-of-archive blocks too: the gzip trailer's CRC and length
        # are checked only at the end of the stream, and the cap still applies.
        while stream.read(_READ_CHUNK):
            pass
    except VerifyError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise _corrupt(exc) from None
    return builder.finish()


def _add_member(builder: TreeBuilder, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    if _is_archive_root(member):
        return
    if member.isfile():
        path = builder.admit(member.name, member.size)  # refused here, before reading data
        builder.add_file(path, _read_data(tar, member), executable=bool(member.mode & 0o111))
        return
    path = builder.admit(member.name)
    if member.isdir():
        builder.add_dir(path)
    elif member.issym():
        check_link(path, member.linkname)
        builder.add_symlink(path, member.linkname)
    elif member.islnk():
        builder.add_hardlink(path, member.linkname)
    else:
        raise VerifyError(f"archive member {member.name!r} is a device, fifo or other special file")


def top_level_names(bundle: Bundle) -> set[str]:
    return {path.split("/", 1)[0] for path in bundle}
