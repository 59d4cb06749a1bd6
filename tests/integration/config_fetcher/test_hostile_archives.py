"""Hostile .tar.gz bundles against the real `config-fetcher --once` process: each refused with
exit 1 and one log line naming the problem, what was published before left byte-for-byte
intact, and (where memory is the attack) the process's peak RSS bounded, read as VmHWM from
/proc/<pid>/status while it runs (tests/support/peak_rss.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.config_fetcher.helpers import Run, once_cmd, snapshot
from tests.support import hostile_tars as h
from tests.support.fault_origin import FaultOrigin, Reply, fault_origin
from tests.support.peak_rss import Measured, run_measured

pytestmark = pytest.mark.integration

# The fetcher at rest is ~28 MiB (local source or HTTP: runtime/http11, no aiohttp); each
# attack below would take from 256 MiB (main's whole-archive gunzip up to the cap) to 3 GiB.
# 64 MiB is half the Pod's 128Mi limit.
PEAK_BOUND_MIB = 64


def fetch(source: str, dest: Path, *args: str) -> tuple[Run, Measured]:
    measured = run_measured(
        once_cmd(source, dest, "--deadline", "30", *args),
        timeout=90,
        env=dict(os.environ),
    )
    run = Run(subprocess.CompletedProcess([], measured.code, measured.stdout, measured.stderr))
    return run, measured


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path, dict]:
    """--dest already holding a verified publish of a good bundle, and the bundle's path
    (the hostile one is written over it, as a changed source)."""
    source = tmp_path / "bundle.tar.gz"
    source.write_bytes(h.good())
    dest = tmp_path / "site"
    run, _ = fetch(str(source), dest)
    assert run.code == 0, run.stdout
    assert (dest / "html" / "index.html").read_bytes() == b"v1\n"
    return source, dest, snapshot(dest)


def assert_refused(run: Run, measured: Measured, dest: Path, before: dict, *fragments: str) -> None:
    assert run.code == 1, run.stdout + run.stderr
    reason = run.reason()  # exactly one error line
    for fragment in fragments:
        assert fragment in reason, reason
    assert snapshot(dest) == before, "previously published content must be intact"
    assert measured.samples > 0
    assert measured.peak_mib < PEAK_BOUND_MIB, (
        f"peak RSS (VmHWM) {measured.peak_mib:.0f} MiB, {measured.samples} samples"
    )


ESCAPES: dict[str, tuple[Callable[[], bytes], str]] = {
    "link-to-a-parent-then-its-parent": (
        lambda: h.escape_through_parent_link("outside.txt"),
        "archive member 'html/q' is a symlink pointing outside the destination",
    ),
    "repeated-self-links": (
        h.escape_through_self_links,
        "archive member 'html/hostname' is a symlink pointing outside the destination",
    ),
    "chain-of-links": (
        lambda: h.escape_through_chain("outside.txt"),
        "archive member 'html/secret' is a symlink pointing outside the destination",
    ),
    "loop": (h.symlink_loop, "is a symlink loop"),
    "too-many-hops": (lambda: h.symlink_chain(40), "follows more than 32 links"),
    "member-under-a-dir-symlink": (
        h.member_under_dir_symlink,
        "archive member 'lnk/x' lies under 'lnk', which is not a directory",
    ),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_symlinks_escaping_through_the_bundles_own_links(published, tmp_path, case) -> None:
    source, dest, before = published
    (tmp_path / "outside.txt").write_text("SECRET outside the volume\n")
    build, fragment = ESCAPES[case]
    source.write_bytes(build())
    run, measured = fetch(str(source), dest)
    assert_refused(run, measured, dest, before, fragment)
    for path in dest.rglob("*"):
        assert os.path.realpath(path).startswith(str(dest.resolve()) + os.sep), path


def test_a_link_resolving_inside_through_other_links_is_published(tmp_path) -> None:
    """The rule refuses escapes, not links through links: these resolve inside."""
    source = tmp_path / "bundle.tar.gz"
    source.write_bytes(
        h.tar_gz(
            [
                ("html/a/b/page.html", b"page\n"),
                h.symlink("html/up", ".."),
                h.symlink("html/latest", "up/html/a/b/page.html"),
                h.symlink("html/chain", "latest"),
                ("html/index.html", b"index\n"),
                h.hardlink("html/copy.html", "html/index.html"),
            ]
        )
    )
    dest = tmp_path / "site"
    run, _ = fetch(str(source), dest)
    assert run.code == 0, run.stdout
    assert (dest / "html" / "chain").read_bytes() == b"page\n"
    assert (dest / "html" / "copy.html").read_bytes() == b"index\n"
    assert not (dest / "html" / "copy.html").is_symlink()


MEMORY: dict[str, tuple[Callable[[], bytes], str]] = {
    "gnu-sparse-3GiB": (h.sparse_gnu, "archive member 'html/big.bin' is a sparse file"),
    "pax-sparse-1.0-3GiB": (h.sparse_pax_10, "is a sparse file"),
    "pax-sparse-0.1-3GiB": (h.sparse_pax_01, "archive member 'html/big.bin' is a sparse file"),
    "zeros-1GiB": (
        lambda: h.zeros_member(1 << 30),
        "archive member 'html/zeros.bin' (1073741824 bytes) takes the content past "
        "--max-unpacked-bytes",
    ),
    "pax-header-512MiB": (
        lambda: h.huge_pax_header(512 << 20),
        "archive has an extended header of 536870912 bytes (more than 65536)",
    ),
    "gnu-long-name-1MiB": (
        lambda: h.long_name(1 << 20),
        "archive has an extended header of 1048577 bytes (more than 65536)",  # GNU 'L'
    ),
    "pax-long-name-1MiB": (
        lambda: h.tar_gz([("html/index.html", b"ok\n"), ("html/" + "n" * (1 << 20), b"x")]),
        "archive has an extended header of 1048595 bytes (more than 65536)",  # PAX 'x'
    ),
    "200k-tiny-members": (lambda: h.many_members(200_000), "more than 10000 entries"),
    "deep-path": (lambda: h.deep_path(200), "is more than 32 directories deep"),
}


@pytest.mark.parametrize("case", sorted(MEMORY))
def test_archive_bombs_are_refused_within_bounded_memory(published, case) -> None:
    source, dest, before = published
    build, fragment = MEMORY[case]
    data = build()
    assert len(data) < 2 << 20, "small on the wire: the attack is what it unpacks to"
    source.write_bytes(data)
    run, measured = fetch(str(source), dest)
    assert_refused(run, measured, dest, before, fragment)


@pytest.fixture
def origin() -> Iterator[FaultOrigin]:
    with fault_origin() as server:
        yield server


def test_a_bomb_over_http_is_refused_within_bounded_memory(origin, tmp_path) -> None:
    """The HTTP source too: the sparse bomb and the gzip bomb."""
    origin.script("/site.tar.gz", Reply(200, h.good()))
    dest = tmp_path / "site"
    run, _ = fetch(origin.url + "/site.tar.gz", dest)
    assert run.code == 0, run.stdout
    before = snapshot(dest)
    for bomb, fragment in [
        (h.sparse_gnu(), "is a sparse file"),
        (h.zeros_member(1 << 30), "takes the content past --max-unpacked-bytes"),
    ]:
        origin.script("/site.tar.gz", Reply(200, bomb))
        run, measured = fetch(origin.url + "/site.tar.gz", dest)
        assert_refused(run, measured, dest, before, fragment)
