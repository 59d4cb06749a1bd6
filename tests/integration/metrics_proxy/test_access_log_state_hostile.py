"""A state file the proxy did not write as it finds it: positions past the log's end (bogus, or
the log was truncated and refilled with the same first line since), an offset no file can have,
a huge file, and a second proxy pointed at the same file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy
from tests.integration.metrics_proxy.test_access_log import send, start, wait_for
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration


def fingerprint(log: Path) -> str:
    first = log.read_bytes().split(b"\n", 1)[0] + b"\n"
    return hashlib.blake2b(first, digest_size=8).hexdigest()


def write_state(state: Path, files: dict[str, int]) -> None:
    document = {"kind": "sidecars.metrics-proxy", "version": 1, "data": {"files": files}}
    state.write_text(json.dumps(document))


def vmhwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(
    ("past", "said"),
    [
        (4096, "saved position is past the end of the file"),
        (2**53, "saved position is past the end of the file"),
        (2**63, "is not a file offset"),
        (2**70, "is not a file offset"),
    ],
)
def test_a_position_past_the_end_of_the_log_reads_it_from_its_start(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path, past: int, said: str
) -> None:
    """The file cannot be the one saved (it is shorter than where counting stopped): its lines
    are this Pod's and uncounted. Before the fix the proxy waited for the file to grow past a
    bogus offset (never counting again) or its follower died on an offset no file can have."""
    send(nginx, "/", 2)
    wait_until(lambda: nginx.access_log.stat().st_size > 0, what="history in the access log")
    state = tmp_path / "positions.json"
    size = nginx.access_log.stat().st_size
    write_state(state, {fingerprint(nginx.access_log): past if past > 4096 else size + past})
    proxy = start(proxies, nginx, "--state-file", str(state))
    send(nginx, "/missing", 3)
    wait_for(proxy, {("200", "GET"): 2, ("404", "GET"): 3})
    assert said in proxy.proc.output()
    assert proxy.stop() == 0


def test_a_huge_state_file_is_set_aside_in_bounded_memory(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    """A state file is small (a few positions): one of 256 MiB is not read into memory."""
    send(nginx, "/", 2)
    wait_until(lambda: nginx.access_log.stat().st_size > 0, what="history in the access log")
    state = tmp_path / "positions.json"
    with state.open("wb") as f:
        f.write(b'{"kind": "sidecars.metrics-proxy", "version": 1, "data": {"files": {')
        f.write(b" " * (256 << 20))
        f.write(b"}}}")
    proxy = start(proxies, nginx, "--state-file", str(state))
    wait_for(proxy, {("200", "GET"): 2})
    output = proxy.proc.output()
    assert "state file unusable" in output and "larger than" in output
    assert list(tmp_path.glob("positions.json.corrupt-*"))
    peak = vmhwm_kib(proxy.proc.pid)
    assert peak < 128 * 1024, f"VmHWM {peak} KiB"
    assert proxy.stop() == 0


def test_lines_left_in_a_file_rotated_while_the_proxy_was_down_are_counted(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    """The log-shipper rotates access.log to access.log.<UTC time>Z while the proxy restarts:
    the lines written between the proxy's stop and the rename are only in the rotated file.
    Before the fix the restarted proxy followed the live name alone and never counted them."""
    state = tmp_path / "positions.json"
    first = start(proxies, nginx, "--state-file", str(state))
    send(nginx, "/", 5)
    wait_for(first, {("200", "GET"): 5})
    assert first.stop() == 0
    send(nginx, "/missing", 3)  # into the file about to be rotated, never read by the first
    written = nginx.access_log.read_bytes().count(b"\n")
    rotated = nginx.access_log.with_name("access.log.20261201T120000.123456Z")
    nginx.access_log.rename(rotated)
    nginx.app.reopen_logs()
    wait_until(nginx.access_log.exists, what="nginx reopened its access log")
    # Another path: a first line identical to the rotated file's (same second, same request)
    # would make the two files one content (runtime/tail/identity.py), which the shipper's
    # rotation never produces (at most one rotation of a file per second).
    send(nginx, "/index.html", 2)
    second = start(proxies, nginx, "--state-file", str(state))
    wait_for(second, {("404", "GET"): 3, ("200", "GET"): 2})
    send(nginx, "/", 1)
    wait_for(second, {("404", "GET"): 3, ("200", "GET"): 3})
    assert written == 8 and rotated.read_bytes().count(b"\n") == 8  # nothing else went there
    assert second.stop() == 0


def test_a_second_proxy_on_the_same_state_file_is_refused(
    nginx: Site, proxies: Callable[..., Proxy], tmp_path: Path
) -> None:
    """Each proxy writes only the files it follows: two on one state file erase each other's
    positions (and, in separate PID namespaces, both pid 1, share a temp file name), so a
    restart counts a log again. The first one keeps counting; the second stops at start."""
    state = tmp_path / "positions.json"
    first = start(proxies, nginx, "--state-file", str(state))
    second = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--access-log",
        str(nginx.access_log),
        "--state-file",
        str(state),
    )
    assert second.proc.wait(timeout=15) == 2
    assert "--state-file" in second.proc.output() and "in use" in second.proc.output()
    send(nginx, "/", 2)
    wait_for(first, {("200", "GET"): 2})
    assert first.stop() == 0
    third = start(proxies, nginx, "--state-file", str(state))  # the lock went with the first
    send(nginx, "/", 1)
    wait_for(third, {("200", "GET"): 1})
    assert third.stop() == 0
