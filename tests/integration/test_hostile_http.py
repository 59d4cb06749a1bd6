"""The hostile-HTTP suite against every part's health/metrics server, each part a real process
(``python -m sidecars <part> ... --listen``) under an open-files limit of 1024, as a container
often runs: a client that pipelines and never reads, more idle connections than the limit,
slowloris heads, header floods and invalid request lines. What must hold: memory stays bounded
(VmHWM from /proc), /healthz keeps answering on a new connection, and a refused request gets
its status and ``Connection: close`` before the connection closes."""

from __future__ import annotations

import contextlib
import resource
import select
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import Proc, free_port, port_open, sidecars_cmd, wait_until

pytestmark = pytest.mark.integration

NOFILE = 1024  # the part's open-files limit (`ulimit -n`)
HEAD_TIMEOUT = 10.0  # the server's default: a head must be complete within it
MIB = 1024 * 1024


@dataclass
class Part:
    name: str
    port: int
    proc: Proc

    def vm_hwm(self) -> int:
        """Peak resident memory so far, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def alive(self) -> bool:
        return self.proc.popen.poll() is None


def part_args(name: str, root: Path, upstream_url: str) -> list[str]:
    if name == "config-fetcher":
        (root / "src").mkdir()
        (root / "src" / "default.conf").write_text("server { listen 8080; }\n")
        return ["--watch", "--source", str(root / "src"), "--dest", str(root / "dest")]
    if name == "log-shipper":
        (root / "logs").mkdir()
        (root / "logs" / "access.log").write_text("")
        return [
            "--paths", str(root / "logs" / "*.log"), "--state-file", str(root / "state.json"),
            "--sink", "stdout",
        ]  # fmt: skip
    # metrics-proxy: nginx need not be up for its own server to answer; the merged upstream
    # makes its /metrics about 64 KiB, as an app's own metrics can
    return [
        "--stub-status-url", f"http://127.0.0.1:{free_port()}/stub_status",
        "--merge-url", f"app={upstream_url}",
    ]  # fmt: skip


def app_metrics(size: int = 64 * 1024) -> bytes:
    lines = [b"# HELP app_items Items.\n# TYPE app_items gauge\n"]
    i = 0
    while sum(map(len, lines)) < size:
        lines.append(b'app_items{item="%d"} %d\n' % (i, i))
        i += 1
    return b"".join(lines)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_close(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes: then what came)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunks.append(b"<reset>")
            break
        if not chunk:
            chunks.append(b"<closed>")
            break
        chunks.append(chunk)
    return b"".join(chunks)


def open_many(port: int, count: int, timeout: float = 15.0) -> list[socket.socket]:
    """``count`` connections, opened 60 at a time (non-blocking, then waited for), so that
    each wave fits the part's accept queue (64 under a low open-files limit): a wave that
    overflowed it would leave SYN-cookie connections that this side takes as open and the part
    never saw. Those not connected within ``timeout`` are dropped."""
    connected: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    while len(connected) < count and time.monotonic() < deadline:
        wave = [socket.socket() for _ in range(min(60, count - len(connected)))]
        watch = selectors.DefaultSelector()
        for sock in wave:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            watch.register(sock, selectors.EVENT_WRITE)
        done: set[socket.socket] = set()
        try:
            while len(done) < len(wave) and (left := deadline - time.monotonic()) > 0:
                for key, _ in watch.select(left):
                    sock = key.fileobj
                    watch.unregister(sock)
                    done.add(sock)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        connected.append(sock)
        finally:
            watch.close()
        for sock in wave:
            if sock not in connected:
                sock.close()
        select.select([], [], [], 0.02)  # the part's turn to accept the wave
    return connected


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    with connect(port) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(raw)
        return read_until_close(sock, timeout)


def healthz_status(port: int, timeout: float = 5.0) -> int:
    """The status of GET /healthz on a new connection; 0 if none came within ``timeout``."""
    try:
        answer = exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout
        )
    except OSError:
        return 0
    if not answer.startswith(b"HTTP/1.1 "):
        return 0
    return int(answer[9:12])


@pytest.fixture(scope="module", autouse=True)
def enough_files_for_the_attacker() -> Iterator[None]:
    """This process opens more sockets than the part may: raise its own soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(params=["config-fetcher", "log-shipper", "metrics-proxy"])
def part(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Part]:
    name = request.param
    port = free_port()
    # The metrics-proxy's merged upstream: a plain file server, its own process (fast).
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "metrics").write_bytes(app_metrics())
    upstream_port = free_port()
    upstream = Proc(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(upstream_port)],
        tmp_path / "upstream.out",
        cwd=tmp_path / "www",
    )
    request.addfinalizer(upstream.stop)
    wait_until(lambda: port_open(upstream_port), timeout=10, what="the upstream file server")
    args = part_args(name, tmp_path, f"http://127.0.0.1:{upstream_port}/metrics")
    command = sidecars_cmd(name, *args, "--listen", f"127.0.0.1:{port}")
    limited = ["sh", "-c", f'ulimit -n {NOFILE} && exec "$@"', "sh", *command]
    proc = Proc(limited, tmp_path / f"{name}.out")
    made = Part(name, port, proc)

    def serving() -> bool:
        if not made.alive():
            raise AssertionError(f"{name} exited: {proc.output()[-3000:]}")
        return healthz_status(port, 1) == 200

    try:
        wait_until(serving, timeout=20, what=f"{name} answering /healthz")
        yield made
    finally:
        proc.stop()


def test_clients_that_pipeline_and_never_read_cannot_grow_its_memory(part: Part) -> None:
    """8 connections, each sent 240 pipelined GET /metrics in one go (under 16 KiB: one read),
    answers never read, the connections kept open for 6 s: the part must stop reading and
    answering a connection whose answers pile up, instead of buffering them without bound.
    (What the kernel's socket buffers take, about 4 MiB a connection, is not the part's
    memory: the metrics-proxy's 64 KiB /metrics is what makes the difference show.)"""
    baseline = part.vm_hwm()
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n"
    attackers: list[socket.socket] = []
    grown = 0
    try:
        for _ in range(8):
            sock = connect(part.port)
            attackers.append(sock)
            sock.sendall(request * 240)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and grown < 10 * MIB:
            select.select([], [], [], 0.1)
            grown = part.vm_hwm() - baseline
        status = healthz_status(part.port)
        grown = max(grown, part.vm_hwm() - baseline)
    finally:
        for sock in attackers:
            sock.close()
    assert part.alive(), part.proc.output()[-3000:]
    assert status == 200, "/healthz did not answer while the pipeliners ran"
    assert grown < 10 * MIB, f"VmHWM grew {grown / MIB:.1f} MiB"


def test_idle_connections_past_the_open_files_limit_do_not_lock_out_the_probe(
    part: Part,
) -> None:
    """1,200 idle connections against a limit of 1,024 files: the part must not run out of
    file descriptors (accept failing, its own files failing) and /healthz must still answer on a
    new connection."""
    idle = open_many(part.port, 1200)
    try:
        status = healthz_status(part.port)
        second = healthz_status(part.port)
    finally:
        for sock in idle:
            sock.close()
    assert part.alive(), part.proc.output()[-3000:]
    assert (status, second) == (200, 200), f"/healthz after {len(idle)} idle connections"
    assert "out of system resource" not in part.proc.output()


def test_slowloris_heads_are_cut_off_and_the_probe_still_answers(part: Part) -> None:
    """1,100 connections each sending a head one byte every half second (it would take over a
    minute): each is closed once the head timeout passes, and /healthz answers meanwhile."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    slow: dict[socket.socket, int] = {}  # socket -> bytes of the head sent
    closed_at: list[float] = []
    answered = 0
    status = -1
    watch = selectors.DefaultSelector()  # epoll: more descriptors than select() takes
    try:
        for sock in open_many(part.port, 1100):
            slow[sock] = 0
            watch.register(sock, selectors.EVENT_READ)
        started = time.monotonic()
        next_byte = started
        deadline = started + HEAD_TIMEOUT + 20
        while slow and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_byte:
                for sock, sent in list(slow.items()):
                    with contextlib.suppress(BlockingIOError, OSError):
                        sock.send(head[sent : sent + 1])
                        slow[sock] = sent + 1
                next_byte = now + 0.5
            if status < 0 and now - started > 1:
                status = healthz_status(part.port)
            for key, _ in watch.select(0.1):
                sock = key.fileobj
                watch.unregister(sock)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data:  # an answer: the head was taken as complete
                    answered += 1
                closed_at.append(time.monotonic() - started)
                del slow[sock]
                sock.close()
        left = len(slow)
    finally:
        watch.close()
        for sock in slow:
            sock.close()
    assert part.alive(), part.proc.output()[-3000:]
    assert status == 200, "/healthz did not answer during the slowloris"
    assert left == 0, f"{left} slow heads still open {HEAD_TIMEOUT + 20:g}s after they began"
    assert answered == 0


FLOODS = {
    "200 header lines": b"GET /healthz HTTP/1.1\r\n" + b"X-Flood: a\r\n" * 200 + b"\r\n",
    "a 20 KiB header": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"x" * 20480 + b"\r\n\r\n",
    "a 20 KiB target": b"GET /healthz?" + b"q" * 20480 + b" HTTP/1.1\r\n\r\n",
    "an unfinished 24 KiB head": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"x" * 24576,
    "3,000 tiny header lines": b"GET /healthz HTTP/1.1\r\n" + b"X:\r\n" * 3000 + b"\r\n",
}


def test_header_floods_are_refused_with_431_and_closed(part: Part) -> None:
    wrong = {}
    for case, raw in FLOODS.items():
        answer = exchange(part.port, raw)
        if not (
            answer.startswith(b"HTTP/1.1 431 ")
            and b"\r\nConnection: close\r\n" in answer
            and answer.endswith(b"<closed>")
        ):
            wrong[case] = answer[:120]
    assert not wrong, wrong
    assert healthz_status(part.port) == 200


INVALID = {
    "lower-case method": b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a control character in the target": b"GET /health\x7fz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a NUL in the target": b"GET /healthz\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "a word past the version": b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "an unknown version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "a bare CR in a header": b"GET /healthz HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    "a NUL in a header": b"GET /healthz HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "a relative target": b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a TLS hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 40 + b"\r\n\r\n",
    "smuggling CL and TE": (
        b"GET /healthz HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


def test_invalid_requests_get_400_and_close(part: Part) -> None:
    wrong = {}
    for case, raw in INVALID.items():
        answer = exchange(part.port, raw)
        if not (
            answer.startswith(b"HTTP/1.1 400 ")
            and b"\r\nConnection: close\r\n" in answer
            and answer.endswith(b"<closed>")
        ):
            wrong[case] = answer[:120]
    assert not wrong, wrong
    assert healthz_status(part.port) == 200
