"""Directory trees of any depth: the local source's reading, the publisher's writing, and how
publish errors are classified (pure logic and a temp dir, no subprocess)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sidecars.config_fetcher import publish as publish_mod
from sidecars.config_fetcher.bundle import digest
from sidecars.config_fetcher.errors import FetchError, PublishError, VerifyError, publish_error
from sidecars.config_fetcher.members import Entry
from sidecars.config_fetcher.publish import Publisher
from sidecars.config_fetcher.sources import LocalSource


def read(path: Path, max_bytes: int = 1 << 20) -> dict[str, Entry]:
    fetched = LocalSource(path, name=path.name, max_bytes=max_bytes)._read()
    assert fetched.files is not None
    return fetched.files


def test_a_nested_directory_becomes_a_bundle_with_its_directories(tmp_path: Path) -> None:
    (tmp_path / "src/conf.d").mkdir(parents=True)
    (tmp_path / "src/html/a/b").mkdir(parents=True)
    (tmp_path / "src/conf.d/site.conf").write_text("server {}\n")
    (tmp_path / "src/html/a/b/c.html").write_text("c\n")
    (tmp_path / "src/html/run.sh").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "src/html/run.sh", 0o755)
    (tmp_path / "src/html/c").symlink_to("a/b/c.html")
    (tmp_path / "src/html/empty").mkdir()
    bundle = read(tmp_path / "src")
    assert bundle["html/a/b/c.html"] == Entry("file", b"c\n")
    assert bundle["html/a/b"].kind == bundle["html/empty"].kind == "dir"
    assert bundle["html/c"] == Entry("symlink", target="a/b/c.html", mode=0o777)
    assert bundle["html/run.sh"].mode == 0o755


def test_a_git_sync_style_root_link_is_resolved_once(tmp_path: Path) -> None:
    (tmp_path / "rev-1/html").mkdir(parents=True)
    (tmp_path / "rev-1/html/index.html").write_text("1\n")
    (tmp_path / "current").symlink_to("rev-1")
    assert read(tmp_path / "current")["html/index.html"].data == b"1\n"


def test_sizes_are_checked_before_reading(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a").write_bytes(b"x" * 600)
    (tmp_path / "src/b").write_bytes(b"x" * 600)
    with pytest.raises(VerifyError, match="'b' \\(600 bytes\\) takes the content past --max-bytes"):
        read(tmp_path / "src", max_bytes=1000)


def test_the_writer_makes_parents_a_bundle_does_not_list(tmp_path: Path) -> None:
    bundle = {"a/b/c.txt": Entry("file", b"c"), "a/d": Entry("symlink", target="b/c.txt")}
    pub = Publisher(tmp_path / "site")
    pub.prepare()
    pub.publish(bundle, digest(bundle), {})
    assert (tmp_path / "site/a/d").read_bytes() == b"c"


def test_the_writer_never_writes_through_a_symlinked_parent(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = {"l": Entry("symlink", target="../../outside"), "l/x": Entry("file", b"x")}
    pub = Publisher(tmp_path / "site")
    pub.prepare()
    with pytest.raises(PublishError, match="File exists"):
        pub.publish(bundle, digest(bundle), {})
    assert not (outside / "x").exists()


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (errno.ENOSPC, True),
        (errno.EDQUOT, True),
        (errno.EIO, True),
        (errno.EMFILE, True),
        (errno.EACCES, False),
        (errno.EPERM, False),
        (errno.EROFS, False),
        (errno.EEXIST, False),
        (errno.ENOTDIR, False),
        (errno.ENAMETOOLONG, False),
        (errno.ENOENT, False),
    ],
    ids=errno.errorcode.get,
)
def test_publish_errors_are_classified_by_errno(code: int, transient: bool) -> None:
    error = publish_error("writing /srv/site", OSError(code, os.strerror(code)))
    assert error.transient is transient
    assert error.reason == f"writing /srv/site: [Errno {code}] {os.strerror(code)}"


@pytest.mark.parametrize(("code", "transient"), [(errno.ENOSPC, True), (errno.EROFS, False)])
def test_a_failed_write_reports_its_class_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, transient: bool
) -> None:
    pub = Publisher(tmp_path / "site")
    pub.prepare()

    def failing(path: Path, data: bytes, mode: int) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(publish_mod, "_write_file", failing)
    bundle = {"a/b.txt": Entry("file", b"x")}
    with pytest.raises(PublishError) as info:
        pub.publish(bundle, digest(bundle), {})
    assert info.value.transient is transient
    assert os.listdir(tmp_path / "site") == [], "the temp version is removed"


@pytest.mark.parametrize("swap", ["symlink", "file"])
def test_a_directory_swapped_while_the_tree_is_read_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """Whoever writes the source (git-sync, a content volume) can replace a directory with a
    link between the moment it was seen as a directory and the moment it is listed: the
    reader must not follow that link out of the tree (here to a secret beside the source)."""
    from sidecars.config_fetcher import members

    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "token").write_text("SECRET\n")
    src = tmp_path / "src"
    (src / "html").mkdir(parents=True)
    (src / "html/index.html").write_text("hi\n")
    (src / "site.conf").write_text("server {}\n")
    real_add_dir = members.TreeBuilder.add_dir

    def add_dir_then_swap(self: members.TreeBuilder, path: str) -> None:
        real_add_dir(self, path)
        if path == "html":  # seen as a directory: now swap it before it is listed
            os.rename(src / "html", tmp_path / "html.old")
            if swap == "symlink":
                (src / "html").symlink_to(outside)
            else:
                (src / "html").write_text("not a dir\n")

    monkeypatch.setattr(members.TreeBuilder, "add_dir", add_dir_then_swap)
    with pytest.raises(FetchError, match="changed while being read") as info:
        read(src)
    assert info.value.transient, "the next attempt reads a consistent tree"
