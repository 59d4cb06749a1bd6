"""Hostile .tar.gz bundles for the config-fetcher's archive checks, built byte by byte where
tarfile itself would refuse to write them (sparse members, oversized extended headers)."""

from __future__ import annotations

import functools
import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator

BLOCK = 512
GIB = 1 << 30


def info(
    name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = size
    member.linkname = link
    member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return member


def symlink(name: str, target: str) -> tarfile.TarInfo:
    return info(name, kind=tarfile.SYMTYPE, link=target)


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    return info(name, kind=tarfile.LNKTYPE, link=target)


def tar_gz(
    members: Iterable[tarfile.TarInfo | tuple[str, bytes]],
    level: int = 6,
    fmt: int = tarfile.PAX_FORMAT,
) -> bytes:
    """A .tar.gz of ``members`` in this order: (name, data) pairs are regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level, format=fmt) as tar:
        for member in members:
            if isinstance(member, tuple):
                name, data = member
                tar.addfile(info(name, size=len(data)), io.BytesIO(data))
            else:
                tar.addfile(member)
    return buf.getvalue()


def _gzip(chunks: Iterable[bytes], level: int = 9) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = [comp.compress(chunk) for chunk in chunks]
    out.append(comp.flush())
    return b"".join(out)


def _zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(chunk)
    while total > 0:
        yield block[: min(chunk, total)]
        total -= chunk


def _header(member: tarfile.TarInfo, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    return member.tobuf(format=fmt, encoding="utf-8", errors="surrogateescape")


def _with_checksum(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block[:BLOCK])


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


GOOD_FILES = {"conf.d/site.conf": b"server { listen 8080; }\n", "html/index.html": b"v1\n"}


def good() -> bytes:
    return tar_gz(sorted(GOOD_FILES.items()))


# --- symlinks that stay inside as text but escape through the bundle's own links ----------


def escape_through_parent_link(outside_name: str) -> bytes:
    """html/p -> .. is the bundle root; html/q -> p/.. is then the root's parent (--dest);
    html/secret -> q/../NAME is a file beside --dest. As text every target stays inside."""
    return tar_gz(
        [
            ("html/index.html", b"ok\n"),
            symlink("html/p", ".."),
            symlink("html/q", "p/.."),
            symlink("html/secret", f"q/../{outside_name}"),
        ]
    )


def escape_through_self_links(depth: int = 24) -> bytes:
    """d -> . repeated: d/d/d/../../.. is '.' as text, but d is the root each time, so the
    '..'s climb out to / and html/hostname reads /etc/hostname."""
    return tar_gz(
        [
            ("html/index.html", b"ok\n"),
            symlink("d", "."),
            symlink("html/hostname", "../" + "d/" * depth + "../" * depth + "etc/hostname"),
        ]
    )


def escape_through_chain(outside_name: str) -> bytes:
    """x/a -> ../y/b -> .. (the root): x/a/../../NAME is NAME as text, beside --dest for real."""
    return tar_gz(
        [
            ("html/index.html", b"ok\n"),
            info("x", kind=tarfile.DIRTYPE),
            info("y", kind=tarfile.DIRTYPE),
            symlink("y/b", ".."),
            symlink("x/a", "../y/b"),
            symlink("html/secret", f"../x/a/../../{outside_name}"),
        ]
    )


def symlink_loop() -> bytes:
    return tar_gz([("html/index.html", b"ok\n"), symlink("html/a", "b"), symlink("html/b", "a")])


def symlink_chain(hops: int) -> bytes:
    links = [symlink(f"html/l{i}", f"l{i + 1}") for i in range(hops)]
    return tar_gz([("html/index.html", b"ok\n"), *links, symlink(f"html/l{hops}", "index.html")])


def member_under_dir_symlink() -> bytes:
    return tar_gz([("html/index.html", b"ok\n"), symlink("lnk", "html"), ("lnk/x", b"y")])


# --- memory attacks --------------------------------------------------------------------------


def _sparse_gnu_header(name: str, apparent: int, stored: int) -> bytes:
    """An old-GNU sparse header ('S'): one region of ``stored`` bytes at the end of a file of
    ``apparent`` bytes; everything before it is a hole."""
    block = bytearray(_header(info(name, size=stored)))
    block[156:157] = tarfile.GNUTYPE_SPARSE
    block[386:398] = b"%011o\0" % (apparent - stored)  # offset of the region
    block[398:410] = b"%011o\0" % stored  # its length
    block[482] = 0  # no extended sparse blocks
    block[483:495] = b"%011o\0" % apparent  # the real (apparent) size
    return _with_checksum(block)


@functools.cache
def sparse_gnu(apparent: int = 3 * GIB) -> bytes:
    """~200 bytes gzipped, a 3 GiB file once its holes are filled in."""
    data = b"x"
    raw = (
        _header(info("html/index.html", size=3))
        + _padded(b"ok\n")
        + _sparse_gnu_header("html/big.bin", apparent, len(data))
        + _padded(data)
        + bytes(2 * BLOCK)
    )
    return _gzip([raw])


@functools.cache
def sparse_pax_10(apparent: int = 3 * GIB) -> bytes:
    """PAX sparse format 1.0 (GNU tar --sparse --format=posix): the map is in the data."""
    sparse_map = _padded(b"1\n%d\n1\n" % (apparent - 1))
    member = info("html/GNUSparseFile.0/big.bin", size=len(sparse_map) + BLOCK)
    member.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "html/big.bin",
        "GNU.sparse.realsize": str(apparent),
    }
    raw = (
        _header(info("html/index.html", size=3), tarfile.PAX_FORMAT)
        + _padded(b"ok\n")
        + _header(member, tarfile.PAX_FORMAT)
        + sparse_map
        + _padded(b"x")
        + bytes(2 * BLOCK)
    )
    return _gzip([raw])


@functools.cache
def sparse_pax_01(apparent: int = 3 * GIB) -> bytes:
    """PAX sparse format 0.1: the map is a header record."""
    member = info("html/big.bin", size=1)
    member.pax_headers = {"GNU.sparse.size": str(apparent), "GNU.sparse.map": f"{apparent - 1},1"}
    raw = (
        _header(info("html/index.html", size=3), tarfile.PAX_FORMAT)
        + _padded(b"ok\n")
        + _header(member, tarfile.PAX_FORMAT)
        + _padded(b"x")
        + bytes(2 * BLOCK)
    )
    return _gzip([raw])


@functools.cache
def zeros_member(size: int) -> bytes:
    """One regular member of ``size`` zero bytes (a classic gzip bomb: ~1000:1)."""
    head = _header(info("html/index.html", size=3)) + _padded(b"ok\n")
    head += _header(info("html/zeros.bin", size=size))
    return _gzip([head, *_zeros(size), bytes(-size % BLOCK + 2 * BLOCK)])


@functools.cache
def huge_pax_header(size: int) -> bytes:
    """A PAX extended header declaring ``size`` bytes of records (zeros follow): tarfile reads
    an extended header into memory whole."""
    block = bytearray(_header(info("././@PaxHeader", size=size), tarfile.USTAR_FORMAT))
    block[156:157] = tarfile.XHDTYPE
    head = _header(info("html/index.html", size=3)) + _padded(b"ok\n") + _with_checksum(block)
    tail = _header(info("html/after", size=0)) + bytes(2 * BLOCK)
    return _gzip([head, *_zeros(size), bytes(-size % BLOCK), tail])


@functools.cache
def long_name(length: int) -> bytes:
    """A GNU long-name header of ``length`` bytes before one member."""
    name = "html/" + "n" * (length - 5)
    return tar_gz([("html/index.html", b"ok\n"), (name, b"x")], level=9, fmt=tarfile.GNU_FORMAT)


@functools.cache
def many_members(count: int) -> bytes:
    """``count`` empty files: 512 bytes of header each, a few bytes each once gzipped."""
    blocks = [_header(info("html/index.html", size=3)), _padded(b"ok\n")]
    blocks += [_header(info(f"html/f{i}")) for i in range(count)]
    blocks.append(bytes(2 * BLOCK))
    return _gzip(blocks)


def deep_path(depth: int) -> bytes:
    return tar_gz([("html/index.html", b"ok\n"), ("/".join(["d"] * depth) + "/f", b"x")])
