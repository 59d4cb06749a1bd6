"""Property: whatever tree an archive holds (files, directories, symlinks with arbitrary
relative targets, '..' chains included, hard links), if the bundle checks accept it, then once
the real Publisher has written it no published path resolves (os.path.realpath) outside
--dest: not even outside the version directory it was written into."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from sidecars.config_fetcher.bundle import digest, from_tar_gz
from sidecars.config_fetcher.errors import VerifyError
from sidecars.config_fetcher.publish import DATA, Publisher

# Few names, so that links often point at each other and at directories of the same tree.
COMPONENT = st.sampled_from(["a", "b", "l", "m"])
NAME = st.lists(COMPONENT, min_size=1, max_size=2).map("/".join)
TARGET_PART = st.sampled_from(["l", "m", "..", "l", "m", "..", "a", "b", ".", ""])
TARGET = st.one_of(
    st.lists(TARGET_PART, min_size=1, max_size=7).map("/".join),
    st.sampled_from(["/etc/hostname", "/", "..", "../..", "l/..", "l/../.."]),
)
MEMBER = st.one_of(
    st.tuples(st.just("file"), NAME, st.binary(max_size=8)),
    st.tuples(st.just("dir"), NAME, st.just(b"")),
    st.tuples(st.just("symlink"), NAME, TARGET),
    st.tuples(st.just("hardlink"), NAME, st.one_of(st.just("f"), NAME)),
)
# Unique names and one file up front: most generated trees are then well-formed, and the checks
# that matter here (where links lead) decide whether they are accepted.
TREE = st.lists(MEMBER, min_size=1, max_size=10, unique_by=lambda m: m[1]).map(
    lambda ms: [("file", "f", b"f"), *(m for m in ms if m[1] != "f")]
)


def build_tar(members: list[tuple[str, str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(extra, bytes)
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(extra)
            else:
                info.type, info.linkname = tarfile.LNKTYPE, str(extra)
            tar.addfile(info)
    return buf.getvalue()


def assert_published_inside(members: list[tuple[str, str, object]]) -> None:
    try:
        bundle = from_tar_gz(build_tar(members), max_unpacked=1 << 20)
    except VerifyError:
        return  # refused: nothing is published, nothing to check
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp, "dest")
        publisher = Publisher(dest)
        publisher.prepare()
        publisher.publish(bundle, digest(bundle), {"source": "property"})
        real_dest = os.path.realpath(dest)
        version_dir = os.path.join(real_dest, os.readlink(dest / DATA))
        paths = [dest / p for p in bundle]
        for root, dirs, files in os.walk(dest):
            paths += [Path(root, n) for n in dirs + files]
        for path in paths:
            resolved = os.path.realpath(path)
            assert resolved == version_dir or resolved.startswith(version_dir + os.sep), (
                f"{path} resolves to {resolved}, outside {version_dir}",
                members,
            )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=True,  # the same 200 trees on every run; the examples below are kept regressions
)
@given(TREE)
# Kept as regressions (each accepted by the textual check of main before the fix): every target
# stays inside as text and escapes through the tree's own links.
@example(
    [("file", "f", b"x"), ("dir", "a", b""), ("symlink", "a/l", ".."), ("symlink", "a/m", "l/..")]
)
@example([("file", "f", b"x"), ("symlink", "l", "."), ("symlink", "m", "l/l/l/../../..")])
@example(
    [("file", "f", b"x"), ("dir", "a", b""), ("symlink", "a/l", ".."), ("symlink", "b", "a/l/../a")]
)
@example(
    [
        ("file", "f", b"x"),
        ("dir", "b", b""),
        ("symlink", "b/l", "."),
        ("symlink", "b/m", "l/l/../.."),
    ]
)
# Found by this test on main: a link through itself (ELOOP once published), accepted there.
@example([("file", "f", b"f"), ("file", "a", b""), ("symlink", "b", "b//l")])
def test_accepted_trees_publish_only_paths_inside_dest(members) -> None:
    assert_published_inside(members)


GOOD_TAR = gzip.decompress(
    build_tar(
        [
            ("file", "html/index.html", b"index"),
            ("dir", "conf.d", b""),
            ("symlink", "html/l", "index.html"),
            ("hardlink", "html/h", "html/index.html"),
        ]
    )
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    st.lists(
        # The headers and data are the first 3 KiB; the rest is the zero padding of the record.
        st.tuples(st.integers(0, 3071), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, len(GOOD_TAR)),
)
def test_corrupted_tar_headers_give_a_bundle_or_a_verify_error(flips, cut) -> None:
    """Fuzz tarfile under our checks: bytes of a valid tar changed (headers included) and the
    stream cut anywhere, gzipped again so the tar reader sees the damage: the outcome is a
    bundle or a VerifyError, never another exception, and an accepted bundle stays inside."""
    raw = bytearray(GOOD_TAR)
    for offset, byte in flips:
        raw[offset] = byte
    try:
        bundle = from_tar_gz(gzip.compress(bytes(raw[:cut])), max_unpacked=1 << 20)
    except VerifyError:
        return
    assert all(not p.startswith(("/", "..")) for p in bundle)
