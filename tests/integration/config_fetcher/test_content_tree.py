"""Directory sources of any depth against the real fetcher (and real nginx): nested directories
published atomically, symlinks inside the tree kept, hostile entries refused with one line,
a change to a nested file noticed by the watcher and reloaded into nginx, and publish errors
that retrying cannot fix failing fast."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.config_fetcher.helpers import fetch_once, snapshot, watch_cmd
from tests.support.metrics import value
from tests.support.nginx import APPS, AppNginx, have_nginx
from tests.support.procs import Proc, free_port, http_get, wait_until

pytestmark = pytest.mark.integration


def write_tree(root: Path, files: dict[str, bytes | str]) -> None:
    """Files (bytes) and symlinks (str targets) below ``root``, parents made as needed."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.symlink_to(content)
        else:
            path.write_bytes(content)


def replace(path: Path, data: bytes) -> None:
    """Change a file the way an editor or git checkout does: a new file renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


NESTED = {
    "conf.d/site.conf": b"server { listen 8080; }\n",
    "html/index.html": b"index\n",
    "html/a/b/c.html": b"deep\n",
    "html/a/b/d/e/f.css": b"body {}\n",
    "html/latest.html": "a/b/c.html",  # a symlink inside the tree
    "html/assets": "a/b/d",  # a directory symlink inside the tree
}


def test_once_publishes_a_nested_tree_with_its_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_tree(source, NESTED)
    dest = tmp_path / "site"
    run = fetch_once(str(source), dest, "--deadline", "5")
    assert run.code == 0, run.stdout
    assert (dest / "html" / "a" / "b" / "c.html").read_bytes() == b"deep\n"
    assert (dest / "html" / "a" / "b" / "d" / "e" / "f.css").read_bytes() == b"body {}\n"
    assert os.readlink(dest / "html" / "latest.html") == "a/b/c.html"
    assert (dest / "html" / "latest.html").read_bytes() == b"deep\n"
    assert (dest / "html" / "assets" / "e" / "f.css").read_bytes() == b"body {}\n"
    assert (dest / "conf.d").is_symlink(), "top-level names go through ..data"
    for path in dest.rglob("*"):
        assert os.path.realpath(path).startswith(str(dest.resolve()) + os.sep), path


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path, dict]:
    source = tmp_path / "src"
    write_tree(source, NESTED)
    dest = tmp_path / "site"
    assert fetch_once(str(source), dest).code == 0
    return source, dest, snapshot(dest)


@pytest.mark.parametrize(
    ("entry", "content", "fragment"),
    [
        ("html/pw", "../../outside.txt", "source entry 'html/pw' is a symlink pointing outside"),
        ("html/abs", "/etc/hostname", "source entry 'html/abs' is a symlink to absolute path"),
        (
            "html/up2",
            "a/../../conf.d/../..",
            "source entry 'html/up2' is a symlink pointing outside",
        ),
        ("html/loop", "loop", "source entry 'html/loop' is a symlink loop"),
    ],
)
def test_symlinks_leaving_the_tree_are_refused(
    published, tmp_path: Path, entry: str, content: str, fragment: str
) -> None:
    source, dest, before = published
    (tmp_path / "outside.txt").write_text("SECRET\n")
    write_tree(source, {entry: content})
    run = fetch_once(str(source), dest)
    assert run.code == 1, run.stdout
    assert fragment in run.reason()
    assert snapshot(dest) == before


def test_an_escape_through_the_trees_own_links_is_refused(published) -> None:
    """Each target stays inside as text; html/a/up is the tree's root, so up/.. is beyond."""
    source, dest, before = published
    write_tree(source, {"html/a/up": "../..", "html/esc": "a/up/../outside.txt"})
    run = fetch_once(str(source), dest)
    assert run.code == 1, run.stdout
    assert "source entry 'html/esc' is a symlink pointing outside the destination" in run.reason()
    assert snapshot(dest) == before


def test_a_fifo_in_the_tree_is_refused_not_read(published) -> None:
    source, dest, before = published
    os.mkfifo(source / "html" / "a" / "pipe")  # reading it would block forever
    run = fetch_once(str(source), dest, timeout=30)
    assert run.code == 1, run.stdout
    assert "source entry 'html/a/pipe' is a device, fifo, socket or special file" in run.reason()
    assert snapshot(dest) == before


def test_a_tree_over_max_bytes_is_refused_before_reading(published) -> None:
    source, dest, before = published
    (source / "html" / "a" / "big.bin").write_bytes(b"x" * 5000)
    run = fetch_once(str(source), dest, "--max-bytes", "4KiB")
    assert run.code == 1, run.stdout
    assert "source entry 'html/a/big.bin' (5000 bytes) takes the content past --max-bytes 4096" in (
        run.reason()
    )
    assert snapshot(dest) == before


def test_a_name_clash_in_dest_fails_fast_with_one_line(tmp_path: Path) -> None:
    """Retrying cannot remove a directory the fetcher did not publish: --once gives up at the
    first attempt (on main it was retried as transient until --deadline)."""
    source = tmp_path / "src"
    write_tree(source, NESTED)
    dest = tmp_path / "site"
    (dest / "html").mkdir(parents=True)
    (dest / "html" / "mine.html").write_text("not the fetcher's\n")
    run = fetch_once(str(source), dest, "--deadline", "20")
    assert run.code == 1, run.stdout
    assert "exists and was not published by config-fetcher" in run.reason()
    error = run.errors()[0]
    assert error["attempts"] == 1 and error["why"] == "not retryable", error
    assert error["what"] == "publish"
    assert (dest / "html" / "mine.html").read_text() == "not the fetcher's\n"
    assert not [e for e in run.events if e.get("msg") == "retrying"]


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.mark.skipif(not have_nginx(), reason="nginx is not installed")
def test_watch_notices_nested_changes_and_nginx_serves_them(
    app: AppNginx, tmp_path: Path, procs: list[Proc]
) -> None:
    site_conf = (APPS / "site" / "conf.d" / "site.conf").read_bytes()
    source = tmp_path / "checkout"
    write_tree(
        source,
        {
            "conf.d/site.conf": site_conf,
            "html/index.html": b"index\n",
            "html/a/b/c.html": b"deep v1\n",
            "html/latest.html": "a/b/c.html",
        },
    )
    port, listen = free_port(), free_port()
    env = {**os.environ, "NGINX_PORT": f"127.0.0.1:{port}", "SITE_DIR": str(app.site_dir)}
    proc = Proc(
        watch_cmd(
            str(source),
            str(app.site_dir),
            "--env-subst",
            "--reload-pidfile",
            str(app.pid_file),
            "--listen",
            f"127.0.0.1:{listen}",
            "--interval",
            "60",  # only file notifications can notice the changes below in time
            "--stale-after",
            "120",
            "--reload-debounce",
            "0.1",
        ),
        tmp_path / "fetcher.log",
        env=env,
    )
    procs.append(proc)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
        timeout=20,
        what="fetcher ready",
    )
    app.start()
    base = f"http://127.0.0.1:{port}"
    assert http_get(f"{base}/a/b/c.html")[:2] == (200, b"deep v1\n")
    assert http_get(f"{base}/latest.html")[:2] == (200, b"deep v1\n")
    # A nested content file changes: published (a new version), served through the symlink.
    replace(source / "html" / "a" / "b" / "c.html", b"deep v2\n")
    wait_until(
        lambda: http_get(f"{base}/latest.html")[:2] == (200, b"deep v2\n"),
        timeout=20,
        what="the nested change served",
    )
    # A nested config file changes: nginx serves the new location only after the reload.
    assert http_get(f"{base}/v")[0] == 404
    replace(
        source / "conf.d" / "site.conf",
        site_conf.replace(
            b"location / {", b'location = /v { return 200 "v2\\n"; }\n    location / {'
        ),
    )
    wait_until(
        lambda: http_get(f"{base}/v")[:2] == (200, b"v2\n"),
        timeout=20,
        what="nginx reloaded with the nested config change",
    )
    assert value(listen, "config_fetcher_fetches_total", result="published") >= 3
    # nginx serves the change as soon as it took the signal; the fetcher counts the reload
    # once it has seen the new workers (a moment later on a loaded machine).
    wait_until(
        lambda: value(listen, "config_fetcher_reloads_total", method="signal", result="ok") >= 1,
        timeout=20,
        what="the reload verified and counted",
    )
    assert value(listen, "config_fetcher_failures_total", stage="publish") == 0
