"""Atomic publication on a real filesystem (a temp dir stands in for the shared volume)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecars.config_fetcher import publish as publish_mod
from sidecars.config_fetcher.bundle import Entry, digest
from sidecars.config_fetcher.errors import PublishError
from sidecars.config_fetcher.publish import DATA, Publisher


def bundle(**files: bytes) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for name, data in files.items():
        path = name.replace("__", "/")
        if "/" in path:
            out[path.split("/")[0]] = Entry("dir", mode=0o755)
        out[path] = Entry("file", data)
    return out


def put(pub: Publisher, b: dict[str, Entry]) -> str:
    return pub.publish(b, digest(b), {"source": "test"}).version


def tree(dest: Path) -> dict[str, bytes]:
    """What a reader sees through the user-visible names."""
    result = {}
    for root, _, files in os.walk(dest, followlinks=True):
        rel_root = Path(root).relative_to(dest)
        if any(p.startswith("..") for p in rel_root.parts):
            continue
        for f in files:
            if not f.startswith(".."):
                result[str(rel_root / f)] = (Path(root) / f).read_bytes()
    return result


def test_layout_and_swap(tmp_path: Path) -> None:
    pub = Publisher(tmp_path / "site")
    pub.prepare()
    assert pub.current() is None
    v1 = put(pub, bundle(conf__a=b"1", index=b"i1"))
    assert os.readlink(tmp_path / "site" / DATA) == v1
    assert os.readlink(tmp_path / "site" / "conf") == f"{DATA}/conf"
    assert tree(tmp_path / "site") == {"conf/a": b"1", "index": b"i1"}
    v2 = put(pub, bundle(conf__a=b"2", other=b"o"))
    assert v2 != v1
    assert tree(tmp_path / "site") == {"conf/a": b"2", "other": b"o"}
    assert not (tmp_path / "site" / "index").exists(), "names gone from the bundle are removed"
    current = pub.current()
    assert current is not None and current.version == v2


def test_old_versions_are_kept_then_collected(tmp_path: Path) -> None:
    pub = Publisher(tmp_path, keep_versions=1)
    versions = [put(pub, bundle(a=str(i).encode())) for i in range(4)]
    present = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("..2"))
    assert present == versions[-2:]


def test_refuses_to_shadow_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("someone else's")
    pub = Publisher(tmp_path)
    with pytest.raises(PublishError, match="was not published by config-fetcher"):
        put(pub, bundle(**{"index.html": b"x"}))
    assert (tmp_path / "index.html").read_text() == "someone else's"


def test_failed_write_leaves_previous_version_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = Publisher(tmp_path)
    put(pub, bundle(a=b"old-a", b=b"old-b"))
    before = tree(tmp_path)
    calls = {"n": 0}
    real = publish_mod._write_file

    def failing(path: Path, data: bytes, mode: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(publish_mod, "_write_file", failing)
    with pytest.raises(PublishError, match="No space left on device"):
        put(pub, bundle(a=b"new-a", b=b"new-b"))
    assert tree(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("..tmp-")]


def test_prepare_removes_leftovers_and_reports_unwritable(tmp_path: Path) -> None:
    (tmp_path / "..tmp-crashed").mkdir()
    (tmp_path / "..tmp-crashed" / "half").write_text("x")
    Publisher(tmp_path).prepare()
    assert not (tmp_path / "..tmp-crashed").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(PublishError, match="is not writable"):
        Publisher(blocker / "sub").prepare()


def test_file_modes_ignore_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        pub = Publisher(tmp_path)
        put(pub, {"run.sh": Entry("file", b"#!/bin/sh", mode=0o755), "a": Entry("file", b"x")})
    finally:
        os.umask(old)
    assert (tmp_path / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / DATA).stat().st_mode & 0o777 == 0o755, "nginx (another uid) must read it"


def test_repair_links_what_data_names_and_unlinks_what_it_does_not(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    put(pub, bundle(a__x=b"1", gone=b"g"))
    v2 = put(pub, bundle(a__x=b"2", new=b"n"))
    # The state a crash between the swap and the links leaves (see tests/integration).
    (tmp_path / "new").unlink()
    (tmp_path / "gone").symlink_to(f"{DATA}/gone")
    (tmp_path / "mine").write_text("operator\n")
    assert sorted(pub.repair()) == ["linked new", "unlinked gone"]
    assert tree(tmp_path) == {"a/x": b"2", "new": b"n", "mine": b"operator\n"}
    assert pub.repair() == [], "nothing left to do"
    assert os.readlink(tmp_path / DATA) == v2


def test_switch_to_an_earlier_version_and_its_names(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    v1 = put(pub, bundle(a__x=b"1", only1=b"o"))
    put(pub, bundle(a__x=b"2", only2=b"t"))
    pub.switch_to(v1)
    assert os.readlink(tmp_path / DATA) == v1
    assert tree(tmp_path) == {"a/x": b"1", "only1": b"o"}
    current = pub.current()
    assert current is not None and current.version == v1
    with pytest.raises(PublishError, match="not on disk"):
        pub.switch_to("..2000_01_01_00_00_00.000000000_000000000000")


def test_garbage_collection_keeps_the_pinned_version(tmp_path: Path) -> None:
    pub = Publisher(tmp_path, keep_versions=0)
    served = put(pub, bundle(a=b"1"))
    pub.pinned = {served}
    for n in range(2, 5):
        put(pub, bundle(a=str(n).encode()))
    versions = {c.name for c in tmp_path.iterdir() if c.is_dir() and not c.is_symlink()}
    assert served in versions and len(versions) == 2, versions
    pub.switch_to(served)  # still there to roll back to
    assert tree(tmp_path) == {"a": b"1"}


def test_swapped_at_follows_each_swap(tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    assert pub.swapped_at() is None
    v1 = put(pub, bundle(a=b"1"))
    first = pub.swapped_at()
    put(pub, bundle(a=b"2"))
    os.utime(tmp_path / DATA, (1, 1), follow_symlinks=False)
    pub.switch_to(v1)
    second = pub.swapped_at()
    assert first is not None and second is not None and second > 1


def test_a_top_level_name_of_the_longest_accepted_length_is_published(tmp_path: Path) -> None:
    """The member checks accept names of up to 255 bytes (NAME_MAX): the temporary link made
    to swap a top-level link atomically must not be longer than the name itself, or the
    publish fails after ``..data`` has already switched (a version with its link missing)."""
    from sidecars.config_fetcher.members import MAX_NAME_BYTES

    name = "n" * MAX_NAME_BYTES
    pub = Publisher(tmp_path / "dest")
    pub.prepare()
    put(pub, {name: Entry("file", b"long\n"), "a.conf": Entry("file", b"a\n")})
    assert tree(tmp_path / "dest") == {name: b"long\n", "a.conf": b"a\n"}
    pub.switch_to(put(pub, {name: Entry("file", b"v2\n")}))
    assert (tmp_path / "dest" / name).read_bytes() == b"v2\n"
