"""Every bad input and fault: a clear one-line reason, the right exit code, and what was
published before left byte-for-byte intact."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from sidecars.config_fetcher.bundle import sha256_hex
from tests.integration.config_fetcher.helpers import fetch_once, snapshot, tar_gz
from tests.support.fault_origin import FaultOrigin, Reply, fault_origin
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

GOOD = tar_gz({"conf.d/site.conf": b"server { listen 8080; }\n", "html/index.html": b"v1\n"})


@pytest.fixture
def origin() -> Iterator[FaultOrigin]:
    with fault_origin() as server:
        yield server


@pytest.fixture
def published(origin: FaultOrigin, tmp_path: Path) -> tuple[Path, dict]:
    """A destination that already holds a verified publish of GOOD."""
    dest = tmp_path / "site"
    origin.script("/good.tar.gz", Reply(200, GOOD))
    run = fetch_once(origin.url + "/good.tar.gz", dest)
    assert run.code == 0, run.stdout
    before = snapshot(dest)
    assert (dest / "html" / "index.html").read_bytes() == b"v1\n"
    return dest, before


def assert_failed(run, before: dict, dest: Path, *fragments: str) -> str:
    assert run.code == 1, run.stdout
    reason = run.reason()
    for fragment in fragments:
        assert fragment in reason, reason
    assert snapshot(dest) == before, "previously published content must be intact"
    return reason


def test_404_fails_fast_naming_url_and_status(origin, published) -> None:
    dest, before = published
    origin.script("/gone.tar.gz", Reply(404, b"nope"))
    run = fetch_once(origin.url + "/gone.tar.gz", dest, "--deadline", "30")
    assert_failed(run, before, dest, f"GET {origin.url}/gone.tar.gz", "HTTP 404")
    assert len([p for p, _ in origin.requests if p == "/gone.tar.gz"]) == 1, "404 is not retried"


def test_500_then_200_is_retried_and_publishes(origin, published) -> None:
    dest, _ = published
    new = tar_gz({"conf.d/site.conf": b"server { listen 8080; }\n", "html/index.html": b"v2\n"})
    origin.script("/flaky.tar.gz", Reply(500, b"oops"), Reply(503, b"busy"), Reply(200, new))
    run = fetch_once(origin.url + "/flaky.tar.gz", dest, "--deadline", "30")
    assert run.code == 0, run.stdout
    assert (dest / "html" / "index.html").read_bytes() == b"v2\n"
    assert [e["reason"] for e in run.events if e.get("msg") == "retrying"] == [
        f"GET {origin.url}/flaky.tar.gz: HTTP 500 Internal Server Error",
        f"GET {origin.url}/flaky.tar.gz: HTTP 503 Service Unavailable",
    ]


def test_connection_refused_until_the_deadline(published) -> None:
    dest, before = published
    url = f"http://127.0.0.1:{free_port()}/site.tar.gz"
    run = fetch_once(url, dest, "--deadline", "1.5")
    reason = assert_failed(run, before, dest, f"GET {url}: cannot connect")
    assert "Connection refused" in reason
    error = run.errors()[0]
    assert error["attempts"] > 1 and "deadline 1.5s reached" in error["why"]


def test_stall_mid_body_times_out(origin, published) -> None:
    dest, before = published
    origin.script("/stall.tar.gz", Reply(200, GOOD, stall_after=10))
    run = fetch_once(origin.url + "/stall.tar.gz", dest, "--timeout", "0.5", "--deadline", "2")
    assert_failed(run, before, dest, "/stall.tar.gz", "timed out after 0.5s")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_size_limit(origin, published, chunked: bool) -> None:
    dest, before = published
    origin.script("/big.tar.gz", Reply(200, b"x" * 5000, chunked=chunked))
    run = fetch_once(origin.url + "/big.tar.gz", dest, "--max-bytes", "1KiB")
    expected = (
        "body exceeds --max-bytes 1024"
        if chunked
        else "Content-Length 5000 exceeds --max-bytes 1024"
    )
    assert_failed(run, before, dest, expected)


def test_content_length_larger_than_body(origin, published) -> None:
    dest, before = published
    origin.script("/short.tar.gz", Reply(200, GOOD, declared_length=len(GOOD) + 100))
    run = fetch_once(origin.url + "/short.tar.gz", dest, "--deadline", "1.5")
    assert_failed(run, before, dest, "/short.tar.gz", "body incomplete")


def test_sha256_mismatch(origin, published) -> None:
    dest, before = published
    other = tar_gz({"html/index.html": b"tampered\n"})
    origin.script("/pinned.tar.gz", Reply(200, other))
    run = fetch_once(origin.url + "/pinned.tar.gz", dest, "--sha256", sha256_hex(GOOD))
    assert_failed(run, before, dest, "sha256 mismatch", sha256_hex(GOOD), sha256_hex(other))


def test_sha256_match_publishes(origin, tmp_path: Path) -> None:
    origin.script("/pinned.tar.gz", Reply(200, GOOD))
    run = fetch_once(
        origin.url + "/pinned.tar.gz", tmp_path / "d", "--sha256", "sha256:" + sha256_hex(GOOD)
    )
    assert run.code == 0, run.stdout


def test_corrupt_gzip(origin, published) -> None:
    dest, before = published
    origin.script("/corrupt.tar.gz", Reply(200, GOOD[:20] + b"\0" * 50 + GOOD[70:]))
    run = fetch_once(origin.url + "/corrupt.tar.gz", dest)
    assert_failed(run, before, dest, "corrupt gzip")


def _evil_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        good = tarfile.TarInfo("html/index.html")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"ok\n"))
        if kind == "symlink":
            info = tarfile.TarInfo("html/passwd")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo("../evil.conf" if kind == "dotdot" else "/etc/evil.conf")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("dotdot", "archive member '../evil.conf' escapes the destination"),
        ("absolute", "archive member '/etc/evil.conf' has an absolute path"),
        ("symlink", "archive member 'html/passwd' is a symlink pointing outside"),
    ],
)
def test_hostile_archive_members(
    origin, published, tmp_path: Path, kind: str, fragment: str
) -> None:
    dest, before = published
    origin.script("/evil.tar.gz", Reply(200, _evil_tar(kind)))
    run = fetch_once(origin.url + "/evil.tar.gz", dest)
    assert_failed(run, before, dest, fragment)
    assert not (tmp_path / "evil.conf").exists() and not Path("/etc/evil.conf").exists()


def test_too_many_redirects(origin, published) -> None:
    dest, before = published
    origin.script("/loop", Reply(302, headers={"Location": "/loop"}))
    run = fetch_once(origin.url + "/loop", dest, "--format", "tar.gz", "--max-redirects", "3")
    assert_failed(run, before, dest, "more than 3 redirects")


def test_unreadable_token_file(origin, published, tmp_path: Path) -> None:
    dest, before = published
    origin.script("/auth.tar.gz", Reply(200, GOOD))
    missing = tmp_path / "no-such-token"
    run = fetch_once(origin.url + "/auth.tar.gz", dest, "--bearer-token-file", str(missing))
    assert_failed(run, before, dest, f"cannot read bearer token file {missing}", "No such file")
    assert not origin.requests[1:], "no request is sent without the token"


def test_token_is_sent_and_reread(origin, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    origin.script("/auth.tar.gz", Reply(200, GOOD))
    run = fetch_once(origin.url + "/auth.tar.gz", tmp_path / "d", "--bearer-token-file", str(token))
    assert run.code == 0, run.stdout
    assert origin.requests[-1][1]["authorization"] == "Bearer s3cret"
    assert "s3cret" not in run.stdout, "the token never appears in logs"


@pytest.fixture
def tls_origin() -> Iterator[tuple[FaultOrigin, trustme.CA]]:
    ca = trustme.CA()
    server_ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    with fault_origin(server_ctx) as server:
        yield server, ca


def test_tls_verification_failure(tls_origin, tmp_path: Path) -> None:
    server, _ = tls_origin
    server.script("/site.tar.gz", Reply(200, GOOD))
    dest = tmp_path / "d"
    run = fetch_once(server.url + "/site.tar.gz", dest, env={"SSL_CERT_FILE": "/nonexistent"})
    assert run.code == 1, run.stdout
    assert "TLS verification failed" in run.reason()
    assert not (dest / "html").exists()


def test_tls_with_ca_file(tls_origin, tmp_path: Path) -> None:
    server, ca = tls_origin
    server.script("/site.tar.gz", Reply(200, GOOD))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    run = fetch_once(server.url + "/site.tar.gz", tmp_path / "d", "--ca-file", str(ca_file))
    assert run.code == 0, run.stdout


def test_bad_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    run = fetch_once("https://127.0.0.1:1/x.tar.gz", tmp_path / "d", "--ca-file", str(bad))
    assert run.code == 2
    assert "--ca-file (CONFIG_FETCHER_CA_FILE) from flag: invalid value" in run.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--watch"], "exactly one of --once (init container) or --watch (sidecar) is required"),
        (["--max-bytes", "lots"], "--max-bytes (CONFIG_FETCHER_MAX_BYTES) from flag"),
        (["--format", "zip"], "--format (CONFIG_FETCHER_FORMAT) from flag: invalid value 'zip'"),
        (["--sha256", "abc"], "--sha256 (CONFIG_FETCHER_SHA256) from flag"),
    ],
)
def test_invalid_settings_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    run = fetch_once("http://127.0.0.1:1/x.tar.gz", tmp_path / "d", *args)
    assert run.code == 2
    assert fragment in run.stderr
    assert not (tmp_path / "d").exists(), "nothing is written on a settings error"


@pytest.mark.parametrize("dest", ["src/out", "src", "."])
def test_overlapping_source_and_dest_are_rejected(tmp_path: Path, dest: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.conf").write_text("x")
    run = fetch_once(str(tmp_path / "src"), tmp_path / dest)
    assert run.code == 2
    assert "overlap: the fetcher would read what it publishes" in run.stderr


def test_ftp_source_is_rejected(tmp_path: Path) -> None:
    run = fetch_once("ftp://host/x.tar.gz", tmp_path / "d")
    assert run.code == 2 and "only http://, https:// and local paths" in run.stderr


def test_env_subst_undefined_variable(origin, published) -> None:
    dest, before = published
    origin.script("/t.tar.gz", Reply(200, tar_gz({"conf.d/site.conf": b"listen ${NOPE_PORT};"})))
    run = fetch_once(origin.url + "/t.tar.gz", dest, "--env-subst")
    assert_failed(run, before, dest, "${NOPE_PORT} in conf.d/site.conf is not set")


# --- The direct client (runtime/http11.py) and the proxied one (aiohttp) ---------------------


def test_a_token_with_a_line_break_is_refused_before_any_request(
    origin, published, tmp_path: Path
) -> None:
    """A token file must not smuggle a header (or a second request) onto the wire."""
    dest, before = published
    origin.script("/auth.tar.gz", Reply(200, GOOD))
    token = tmp_path / "token"
    token.write_text("s3cret\r\nX-Injected: yes\n")
    seen = len(origin.requests)
    run = fetch_once(origin.url + "/auth.tar.gz", dest, "--bearer-token-file", str(token))
    assert_failed(run, before, dest, f"bearer token file {token} holds a line break")
    assert not origin.requests[seen:], "nothing is sent with such a token"


def test_a_redirect_to_another_origin_drops_the_token(origin, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with fault_origin() as other:
        other.script("/site.tar.gz", Reply(200, GOOD))
        origin.script("/here.tar.gz", Reply(302, headers={"Location": "/there.tar.gz"}))
        origin.script("/there.tar.gz", Reply(302, headers={"Location": other.url + "/site.tar.gz"}))
        run = fetch_once(
            origin.url + "/here.tar.gz", tmp_path / "d", "--bearer-token-file", str(token)
        )
        assert run.code == 0, run.stdout
        assert [h.get("authorization") for p, h in origin.requests if p.endswith("e.tar.gz")] == [
            "Bearer s3cret",
            "Bearer s3cret",
        ], "a redirect within the origin keeps the token"
        assert [h.get("authorization") for _, h in other.requests] == [None]
    assert (tmp_path / "d" / "html" / "index.html").read_bytes() == b"v1\n"


def test_a_proxy_from_the_environment_is_used(origin, tmp_path: Path) -> None:
    """HTTP_PROXY names a proxy: the GET goes to it in absolute form (aiohttp's client); the
    origin's name need not resolve from here. NO_PROXY naming the host goes direct again."""
    url = "http://origin.invalid:8090/site.tar.gz"
    origin.script(url, Reply(200, GOOD))
    env = {"HTTP_PROXY": origin.url, "http_proxy": origin.url, "NO_PROXY": "", "no_proxy": ""}
    run = fetch_once(url, tmp_path / "d", env=env)
    assert run.code == 0, run.stdout
    assert [path for path, _ in origin.requests] == [url]
    bypass = {**env, "NO_PROXY": "origin.invalid", "no_proxy": "origin.invalid"}
    run = fetch_once(url, tmp_path / "e", "--deadline", "1", env=bypass)
    assert run.code == 1 and "cannot connect" in run.reason(), run.stdout
    assert len(origin.requests) == 1


def test_the_direct_path_never_loads_aiohttp(origin) -> None:
    """Without a proxy the fetcher reaches its origin through runtime/http11.py: aiohttp's
    ~7.5 MiB (bench/pod_tax) stay out of the sidecar."""
    origin.script("/site.tar.gz", Reply(200, GOOD))
    code = (
        "import asyncio, sys\n"
        "from sidecars.config_fetcher.http_source import HttpSource\n"
        "async def main():\n"
        f"    s = HttpSource({origin.url + '/site.tar.gz'!r}, name='s', timeout=10,"
        " max_bytes=2**20, max_redirects=3)\n"
        "    got = await s.fetch()\n"
        "    await s.close()\n"
        "    print(len(got.data), 'aiohttp' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.stdout.split() == [str(len(GOOD)), "False"], out.stderr
