"""Turning fetched bytes into a verified, in-memory bundle of files (pure logic, no I/O).

A bundle is what gets published: relative path -> entry. Nothing touches the shared volume
until a whole bundle has been built and verified, so a bad archive can never leave a
half-written tree behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sidecars.config_fetcher.errors import VerifyError

RESERVED_PREFIX = ".."  # kubelet-style layout names (..data, ..<version>) live beside the content
MAX_MEMBERS = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Literal["file", "dir", "symlink"]
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink target, relative and inside the bundle


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


def check_name(name: str) -> str:
    """Normalise a member name or raise VerifyError naming the problem."""
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise VerifyError(f"archive member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise VerifyError(f"archive member {name!r} has an empty path")
    if ".." in parts:
        raise VerifyError(f"archive member {name!r} escapes the destination (contains '..')")
    if "\0" in name:
        raise VerifyError(f"archive member {name!r} contains a NUL byte")
    if parts[0].startswith(RESERVED_PREFIX):
        raise VerifyError(f"archive member {name!r} uses the reserved prefix '..'")
    return "/".join(parts)


def check_link(path: str, target: str) -> str:
    """A symlink must be relative and resolve inside the bundle."""
    if not target or target.startswith("/"):
        raise VerifyError(f"archive member {path!r} is a symlink to absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise VerifyError(f"archive member {path!r} is a symlink pointing outside: {target!r}")
    return target


def single_file(name: str, data: bytes) -> dict[str, Entry]:
    return {check_name(name): Entry("file", data)}


def _gunzip(data: bytes, max_unpacked: int) -> bytes:
    """Decompress with a hard cap, so a gzip bomb fails fast instead of filling memory."""
    try:
        decomp = zlib.decompressobj(wbits=31)
        out = decomp.decompress(data, max_unpacked + 1)
        if len(out) > max_unpacked or decomp.unconsumed_tail:
            raise VerifyError(f"archive unpacks to more than {max_unpacked} bytes")
        if not decomp.eof:
            raise VerifyError("corrupt gzip: unexpected end of compressed data")
    except zlib.error as exc:
        raise VerifyError(f"corrupt gzip: {exc}") from None
    return out


def from_tar_gz(data: bytes, *, max_unpacked: int) -> dict[str, Entry]:
    """Unpack a .tar.gz into a bundle, refusing anything that could land outside ``--dest``."""
    raw = _gunzip(data, max_unpacked)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            return _members(tar, tar.getmembers())
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise VerifyError(f"corrupt tar archive: {exc}") from None


def _members(tar: tarfile.TarFile, members: Iterable[tarfile.TarInfo]) -> dict[str, Entry]:
    bundle: dict[str, Entry] = {}
    for count, member in enumerate(members, 1):
        if count > MAX_MEMBERS:
            raise VerifyError(f"archive has more than {MAX_MEMBERS} members")
        if member.isdir() and member.name.strip("/.") == "" and not member.name.startswith("/"):
            continue  # the archive's own root ("./" from `tar -C dir .`)
        path = check_name(member.name)
        if member.isdir():
            bundle.setdefault(path, Entry("dir", mode=0o755))
        elif member.isfile():
            handle = tar.extractfile(member)
            assert handle is not None  # isfile() guarantees a payload
            mode = 0o755 if member.mode & 0o111 else 0o644
            bundle[path] = Entry("file", handle.read(), mode=mode)
        elif member.issym():
            bundle[path] = Entry("symlink", target=check_link(path, member.linkname), mode=0o777)
        elif member.islnk():
            raise VerifyError(f"archive member {member.name!r} is a hard link (not supported)")
        else:
            raise VerifyError(
                f"archive member {member.name!r} is a device, fifo or other special file"
            )
    if not any(e.kind == "file" for e in bundle.values()):
        raise VerifyError("archive contains no files")
    _check_tree(bundle)
    return bundle


def _check_tree(bundle: dict[str, Entry]) -> None:
    """Parents must be directories, never files or symlinks (a symlinked parent could redirect
    later writes outside the destination); missing parent directories are added."""
    for path in list(bundle):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = bundle.get(parent)
            if existing is None:
                bundle[parent] = Entry("dir", mode=0o755)
            elif existing.kind != "dir":
                raise VerifyError(
                    f"archive member {path!r} lies under {parent!r}, which is not a directory"
                )


def top_level_names(bundle: Bundle) -> set[str]:
    return {path.split("/", 1)[0] for path in bundle}
