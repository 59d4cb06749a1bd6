"""The archive checks on hostile bundles, in-process (the real-process versions, with their
memory bounds, are in tests/integration/config_fetcher/test_hostile_archives.py)."""

from __future__ import annotations

import io
import tarfile

import pytest

from sidecars.config_fetcher.bundle import MAX_EXTENDED_HEADER_BYTES, from_tar_gz
from sidecars.config_fetcher.errors import VerifyError
from sidecars.config_fetcher.members import MAX_HOPS, Entry, Limits, TreeBuilder
from tests.support import hostile_tars as h

CAP = 256 << 20


def refused(data: bytes, fragment: str, cap: int = CAP) -> None:
    with pytest.raises(VerifyError) as info:
        from_tar_gz(data, max_unpacked=cap)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (h.escape_through_parent_link("x"), "'html/q' is a symlink pointing outside"),
        (h.escape_through_self_links(), "'html/hostname' is a symlink pointing outside"),
        (h.escape_through_chain("x"), "'html/secret' is a symlink pointing outside"),
        (h.symlink_loop(), "is a symlink loop"),
        (h.symlink_chain(MAX_HOPS + 1), f"follows more than {MAX_HOPS} links"),
        (h.member_under_dir_symlink(), "lies under 'lnk', which is not a directory"),
        (h.sparse_gnu(), "'html/big.bin' is a sparse file"),
        (h.sparse_pax_10(), "is a sparse file"),
        (h.sparse_pax_01(), "'html/big.bin' is a sparse file"),
        (h.huge_pax_header(1 << 20), f"more than {MAX_EXTENDED_HEADER_BYTES}"),
        (h.long_name(100_000), f"more than {MAX_EXTENDED_HEADER_BYTES}"),
        (h.many_members(10_001), "more than 10000 entries"),
        (h.deep_path(33), "more than 32 directories deep"),
        (h.tar_gz([("html/" + "n" * 256, b"x")]), "component longer than 255 bytes"),
        (h.tar_gz([("html/" + "n/" * 600, b"x")]), "longer than 1024 bytes"),
        (h.tar_gz([("a", b"1"), ("a", b"2")]), "'a' appears more than once"),
        (h.tar_gz([("a", b"1"), h.symlink("a", "b")]), "'a' appears more than once"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hostile_bundles_are_refused(data: bytes, fragment: str) -> None:
    refused(data, fragment)


def test_links_through_links_that_stay_inside_are_accepted() -> None:
    bundle = from_tar_gz(
        h.tar_gz(
            [
                ("html/a/b/page.html", b"p"),
                h.symlink("html/up", ".."),
                h.symlink("html/latest", "up/html/a/b/page.html"),
                h.symlink("html/chain", "latest"),
                h.symlink("d", "."),
                h.symlink("html/deep", "../d/d/d/html/a/../a/b"),
                h.symlink("html/dangling", "nothing/here"),  # inside, merely missing
            ]
        ),
        max_unpacked=CAP,
    )
    assert bundle["html/chain"] == Entry("symlink", target="latest", mode=0o777)
    assert bundle["html/a/b/page.html"].data == b"p"


def test_a_chain_at_the_hop_limit_is_accepted() -> None:
    from_tar_gz(h.symlink_chain(MAX_HOPS - 1), max_unpacked=CAP)


def test_hard_links_copy_an_earlier_file_and_count_again() -> None:
    data = h.tar_gz([("a", b"x" * 6000), h.hardlink("b", "a")])  # a 10240-byte tar stream
    bundle = from_tar_gz(data, max_unpacked=CAP)
    assert bundle["b"] == Entry("file", b"x" * 6000)
    refused(data, "'b' (6000 bytes) takes the content past --max-unpacked-bytes 11000", cap=11000)
    refused(h.tar_gz([h.hardlink("b", "a"), ("a", b"x")]), "which is not an earlier regular")
    refused(
        h.tar_gz([("a", b"x"), h.symlink("s", "a"), h.hardlink("b", "s")]),
        "'s', which is not an earlier regular file",
    )
    refused(h.tar_gz([("a", b"x"), h.hardlink("b", "../a")]), "hard link to a bad name")


def test_sizes_are_refused_from_the_header_before_the_data_is_read() -> None:
    # The member claims 1 GiB but its data is missing: refused for the size, not as truncated.
    header = h._header(h.info("big", size=1 << 30))
    refused(h._gzip([header]), "'big' (1073741824 bytes) takes the content past")


def test_the_stream_cap_covers_headers_and_padding_too() -> None:
    # 3000 empty members: no data at all, but 1.5 MB of headers.
    refused(h.many_members(3000), "archive unpacks to more than 1000000 bytes", cap=1_000_000)


def test_gzip_integrity_is_checked_past_the_end_of_the_tar() -> None:
    good = h.good()
    corrupt_crc = good[:-8] + bytes(4) + good[-4:]
    refused(corrupt_crc, "corrupt gzip")
    refused(good[:-4], "corrupt gzip")
    refused(good + b"garbage", "corrupt gzip")
    assert from_tar_gz(good + good, max_unpacked=CAP)  # concatenated gzip members are gzip


def test_global_pax_headers_of_git_archive_are_accepted() -> None:
    """git archive writes one global PAX header (the commit id) before the members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.pax_headers = {"comment": "3ca238890f81" * 3}
        tar.addfile(h.info("html/index.html", size=1), io.BytesIO(b"x"))
    assert from_tar_gz(buf.getvalue(), max_unpacked=CAP)["html/index.html"].data == b"x"


def test_the_builder_counts_implicit_parents() -> None:
    builder = TreeBuilder(Limits(max_total_bytes=100, max_entries=3))
    builder.add_file(builder.admit("a/b/c/f"), b"x")
    with pytest.raises(VerifyError, match="implicit parent directories included"):
        builder.finish()
