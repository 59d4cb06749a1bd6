"""Archive member checks and bundle digests (pure)."""

from __future__ import annotations

import io
import tarfile

import pytest

from sidecars.config_fetcher.bundle import (
    Entry,
    check_link,
    check_name,
    digest,
    from_tar_gz,
    single_file,
)
from sidecars.config_fetcher.errors import VerifyError


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for member in members:
            if isinstance(member, tuple):
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
            else:
                tar.addfile(member)
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_names_are_normalised() -> None:
    assert check_name("./conf.d//site.conf") == "conf.d/site.conf"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/passwd", "absolute path"),
        ("../escape.conf", "escapes the destination"),
        ("conf.d/../../x", "escapes the destination"),
        ("..data/x", "reserved prefix"),
        ("", "absolute path"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(VerifyError, match=message):
        check_name(name)


def test_links_must_stay_inside() -> None:
    assert check_link("html/latest", "v1/index.html") == "v1/index.html"
    assert check_link("html/up", "../conf.d") == "../conf.d"
    with pytest.raises(VerifyError, match="pointing outside"):
        check_link("html/x", "../../etc/passwd")
    with pytest.raises(VerifyError, match="absolute path"):
        check_link("x", "/etc/shadow")


def test_tar_round_trip_and_root_member_skipped() -> None:
    root = tarfile.TarInfo("./")
    root.type = tarfile.DIRTYPE
    data = make_tar([root, ("./conf.d/a.conf", b"server {}\n"), ("html/index.html", b"<p>")])
    bundle = from_tar_gz(data, max_unpacked=1 << 20)
    assert bundle["conf.d/a.conf"] == Entry("file", b"server {}\n")
    assert bundle["conf.d"].kind == "dir" and bundle["html"].kind == "dir"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../evil.conf", b"x")], "escapes the destination"),
        ([("/etc/evil.conf", b"x")], "absolute path"),
        ([("ok", b"x"), link("out", "../../etc/passwd")], "symlink pointing outside"),
        ([("ok", b"x"), link("abs", "/etc/passwd")], "symlink to absolute path"),
        ([("ok", b"x"), link("hard", "nope", tarfile.LNKTYPE)], "not an earlier regular file"),
        ([("ok", b"x"), link("dev", "", tarfile.CHRTYPE)], "device, fifo"),
        ([("ok", b"x"), link("fifo", "", tarfile.FIFOTYPE)], "device, fifo"),
        ([("f", b"x"), ("f/under", b"y")], "not a directory"),
        ([link("d", "."), ("d/x", b"y")], "not a directory"),
    ],
)
def test_hostile_archives_are_refused(members: list, message: str) -> None:
    with pytest.raises(VerifyError, match=message):
        from_tar_gz(make_tar(members), max_unpacked=1 << 20)


def test_corrupt_and_truncated_gzip() -> None:
    good = make_tar([("a", b"x" * 1000)])
    with pytest.raises(VerifyError, match="corrupt gzip"):
        from_tar_gz(b"\x1f\x8b\x08\x00garbage-garbage", max_unpacked=1 << 20)
    with pytest.raises(VerifyError, match="corrupt gzip"):
        from_tar_gz(good[: len(good) // 2], max_unpacked=1 << 20)
    with pytest.raises(VerifyError, match="corrupt gzip"):
        from_tar_gz(b"not gzip at all", max_unpacked=1 << 20)


def test_gzip_bomb_is_capped() -> None:
    bomb = make_tar([("zeros", b"\0" * (4 << 20))])
    assert len(bomb) < 50_000
    with pytest.raises(VerifyError, match="past --max-unpacked-bytes 1048576"):
        from_tar_gz(bomb, max_unpacked=1 << 20)


def test_corrupt_tar_inside_valid_gzip() -> None:
    import gzip

    with pytest.raises(VerifyError, match=r"corrupt tar|no files"):
        from_tar_gz(gzip.compress(b"x" * 700), max_unpacked=1 << 20)


def test_digest_is_order_independent_and_content_sensitive() -> None:
    a = {"x": Entry("file", b"1"), "y": Entry("file", b"2")}
    b = {"y": Entry("file", b"2"), "x": Entry("file", b"1")}
    assert digest(a) == digest(b)
    assert digest(a) != digest({"x": Entry("file", b"1"), "y": Entry("file", b"3")})
    assert digest(a) != digest({"x": Entry("file", b"1"), "y": Entry("file", b"2", mode=0o755)})
    assert digest(single_file("x", b"12")) != digest(
        {"x": Entry("file", b"1"), "2": Entry("file", b"")}
    )
