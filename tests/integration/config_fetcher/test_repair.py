"""A crash between the ``..data`` swap and the top-level links (the real CLI killed at exactly
that point) is repaired at the next start, in either mode, even though the content is unchanged
and nothing is published again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecars.config_fetcher.publish import Publisher
from sidecars.config_fetcher.served import Rejected, ServedState, ServedStore
from tests.integration.config_fetcher.helpers import fetch_once, tar_gz, watch_cmd
from tests.support.procs import Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.integration

# The CLI, dying (as a SIGKILL or a power loss would) right after the swap, before any link.
CRASH_AFTER_SWAP = """
import os, sys
from sidecars.config_fetcher import publish
publish.Publisher._sync_top_level = lambda self, names: os._exit(9)
from sidecars.config_fetcher.main import main
sys.exit(main(sys.argv[1:]))
"""

V1 = {"conf.d/a.conf": b"# v1\n", "html/index.html": b"v1\n", "old/gone.txt": b"old\n"}
V2 = {"conf.d/a.conf": b"# v2\n", "html/index.html": b"v2\n", "extra/new.txt": b"new\n"}


def crashed_between_swap_and_links(tmp_path: Path) -> tuple[Path, Path]:
    source, dest = tmp_path / "site.tar.gz", tmp_path / "site"
    source.write_bytes(tar_gz(V1))
    assert fetch_once(str(source), dest).code == 0
    source.write_bytes(tar_gz(V2))
    args = ["--once", "--source", str(source), "--dest", str(dest), "--listen", "off"]
    crash = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_SWAP, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crash.returncode == 9, crash.stdout + crash.stderr
    # The state the crash left: ..data on v2, its new name unlinked, the removed one dangling.
    manifest = json.loads((dest / "..data" / "..sidecars.json").read_text())
    assert manifest["version"] == os.readlink(dest / "..data")
    assert (dest / "..data" / "extra" / "new.txt").read_bytes() == b"new\n"
    assert not os.path.lexists(dest / "extra")
    assert os.path.islink(dest / "old") and not (dest / "old").exists()
    return source, dest


def assert_repaired(dest: Path) -> None:
    assert (dest / "extra" / "new.txt").read_bytes() == b"new\n"
    assert os.readlink(dest / "extra") == "..data/extra"
    assert not os.path.lexists(dest / "old"), "the link of a name gone from ..data is removed"
    assert (dest / "html" / "index.html").read_bytes() == b"v2\n"


def test_the_watch_sidecar_repairs_the_links_at_start(tmp_path: Path) -> None:
    source, dest = crashed_between_swap_and_links(tmp_path)
    listen = free_port()
    proc = Proc(
        watch_cmd(
            str(source),
            str(dest),
            "--listen",
            f"127.0.0.1:{listen}",
            "--interval",
            "60",
            "--stale-after",
            "120",
        ),
        tmp_path / "fetcher.log",
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
            timeout=20,
            what="fetcher ready",
        )
        assert_repaired(dest)
        assert "repaired a top-level link" in proc.output()
        assert '"msg": "published"' not in proc.output(), "nothing republished: same content"
    finally:
        proc.stop()


def test_the_init_container_repairs_the_links_at_start(tmp_path: Path) -> None:
    source, dest = crashed_between_swap_and_links(tmp_path)
    run = fetch_once(str(source), dest)
    assert run.code == 0, run.stdout
    assert_repaired(dest)
    changes = {e["change"] for e in run.events if e.get("msg") == "repaired a top-level link"}
    assert changes == {"linked extra", "unlinked old"}


def test_repair_leaves_what_it_did_not_create(tmp_path: Path) -> None:
    """A file an operator put into --dest is neither replaced nor removed by the repair."""
    source, dest = crashed_between_swap_and_links(tmp_path)
    (dest / "extra").write_text("operator's\n")
    (dest / "notes").symlink_to("/etc/hostname")
    run = fetch_once(str(source), dest)
    assert run.code == 0, run.stdout
    assert (dest / "extra").read_text() == "operator's\n"
    assert os.readlink(dest / "notes") == "/etc/hostname"
    assert not os.path.lexists(dest / "old")


def test_a_rollback_cut_short_is_finished_at_the_next_start(tmp_path: Path) -> None:
    """Recorded as refused, but killed before ``..data`` was switched back: the next start
    switches it and does not publish the refused content again."""
    source, dest = tmp_path / "site.tar.gz", tmp_path / "site"
    source.write_bytes(tar_gz(V1))
    assert fetch_once(str(source), dest).code == 0
    good = ServedStore(dest)
    accepted = Publisher(dest).current()
    source.write_bytes(tar_gz(V2))
    assert fetch_once(str(source), dest).code == 0
    refused = Publisher(dest).current()
    assert accepted is not None and refused is not None and refused != accepted
    good.save(
        ServedState(served=accepted).reject(
            Rejected(refused.digest, refused.version, '[emerg] unknown directive "x"')
        )
    )
    run = fetch_once(str(source), dest)
    assert run.code == 0, run.stdout
    assert os.readlink(dest / "..data") == accepted.version
    assert (dest / "html" / "index.html").read_bytes() == b"v1\n"
    assert (dest / "old" / "gone.txt").exists() and not os.path.lexists(dest / "extra")
    assert any(e.get("msg") == "switched back to the version nginx serves" for e in run.events)
    assert not any(e.get("msg") == "published" for e in run.events)
