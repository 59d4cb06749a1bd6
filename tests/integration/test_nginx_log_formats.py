"""nginx_log against what a real nginx writes: hostile header values under every escape mode,
the built-in combined format and the app's sidecars format, parsed back to what was sent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecars.runtime import nginx_log
from tests.support.nginx import NGINX, have_nginx
from tests.support.procs import Proc, free_port, port_open, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed"),
]

PROBE = "$remote_addr|$remote_user|$http_x_a|${http_x_b}x|$request|$status|$upstream_response_time"
FORMATS = {
    "default": f"log_format d '{PROBE}|$msec|$time_iso8601';",
    "json": f"log_format j escape=json '{PROBE}';",
    "none": f"log_format n escape=none '{PROBE}';",
}
HOSTILE = 'q"u\\o\x01t\u00e9\x7f\tz\x1b'  # quote, backslash, controls, UTF-8, DEL, tab, ESC


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    temp = " ".join(
        f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    temp += f" uwsgi_temp_path {tmp_path / 'uwsgi'}; scgi_temp_path {tmp_path / 'scgi'};"
    sidecars = f"log_format sidecars '{nginx_log.SIDECARS}';"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {tmp_path / "nginx.pid"};
events {{}}
http {{
  {temp}
  {FORMATS["default"]} {FORMATS["json"]} {FORMATS["none"]} {sidecars}
  server {{
    listen 127.0.0.1:{port};
    access_log {logs / "default.log"} d;
    access_log {logs / "json.log"} j;
    access_log {logs / "none.log"} n;
    access_log {logs / "combined.log"} combined;
    access_log {logs / "sidecars.log"} sidecars;
    location / {{ return 200 ok; }}
  }}
}}
"""
    )
    proc = Proc(
        [NGINX, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        tmp_path / "nginx.out",
    )
    try:
        wait_until(lambda: port_open(port), timeout=10, what="nginx port")
        yield port, logs
    finally:
        proc.stop()


def _send(port: int, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


def _lines(path: Path, count: int) -> list[str]:
    def ready() -> list[str] | None:
        if not path.exists():
            return None
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
        return lines if len(lines) >= count else None

    return wait_until(ready, timeout=10, what=f"{count} lines in {path.name}")


REQUESTS = [
    b'GET /a"b\\c?\xd0\xb0 HTTP/1.1\r\nHost: x\r\nX-A: ' + HOSTILE.encode() + b"\r\nX-B: \r\n\r\n",
    b"GET /sp ace HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\r\n\r\n",
]


def test_every_escape_mode_parses_back_to_what_was_sent(nginx: tuple[int, Path]) -> None:
    port, logs = nginx
    for raw in REQUESTS:
        _send(port, raw)
    for escape, directive in FORMATS.items():
        parser = nginx_log.load_log_format(directive)
        lines = _lines(logs / f"{escape}.log", len(REQUESTS))
        parsed = [parser.parse(line) for line in lines]
        assert all(parsed), (escape, lines)
        missing = "-" if escape == "default" else ""
        first, spaced, garbage = parsed
        assert first is not None and spaced is not None and garbage is not None
        assert first["http_x_a"] == HOSTILE
        assert first["http_x_b"] == ""  # sent, but empty
        assert first["request"] == 'GET /a"b\\c?\u0430 HTTP/1.1'
        assert first["remote_user"] == missing
        assert first["upstream_response_time"] == missing
        assert spaced["request"] == "GET /sp ace HTTP/1.1"
        assert spaced["http_x_b"] == missing
        assert garbage["status"] == "400"
        assert garbage["request"].startswith("\x16\x03\x01\x00")
        if escape == "default":
            assert nginx_log.timestamp_ns(first) == nginx_log.parse_msec(first["msec"])


def test_combined_and_sidecars_presets_parse_real_lines(nginx: tuple[int, Path]) -> None:
    port, logs = nginx
    agent = 'agent "quoted" [brackets] \u00e9'
    _send(
        port,
        b"POST /form?x=1 HTTP/1.1\r\nHost: x\r\nReferer: http://r/\r\nUser-Agent: "
        + agent.encode()
        + b"\r\nContent-Length: 0\r\n\r\n",
    )
    for preset in ("combined", "sidecars"):
        (line,) = _lines(logs / f"{preset}.log", 1)
        fields = nginx_log.PRESETS[preset].parse(line)
        assert fields is not None, line
        assert fields["http_user_agent"] == agent
        assert fields["http_referer"] == "http://r/"
        assert nginx_log.status(fields) == 200
        assert nginx_log.method(fields) == "POST"
        assert nginx_log.body_bytes_sent(fields) == 2
        assert nginx_log.timestamp_ns(fields) is not None
        if preset == "sidecars":
            assert nginx_log.request_time(fields) is not None
            assert nginx_log.upstream_response_time(fields) is None  # no upstream: "-"
