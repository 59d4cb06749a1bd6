"""Credentials from files, against the real log-shipper and real receivers: a Secret rotated while
the shipper runs (kubelet's ..data symlink swap, an in-place rewrite, the file briefly gone) is
used from the next batch on with nothing dropped, and no secret is readable through /proc by a
process of the same UID without capabilities (nginx under shareProcessNamespace: true)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.log_shipper.shipper import Shipper
from tests.support.fake_loki import FakeLoki
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import wait_until
from tests.support.secret_volume import SecretVolume

pytestmark = pytest.mark.integration


def write(path: Path, start: int, stop: int) -> None:
    with open(path, "a") as out:
        out.writelines(f"entry {i}\n" for i in range(start, stop))


def proc_text(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def assert_not_exposed(shipper: Shipper, *secrets: str) -> None:
    assert shipper.proc is not None
    exposed = proc_text(shipper.proc.pid, "environ") + proc_text(shipper.proc.pid, "cmdline")
    exposed += shipper.metrics() + shipper.output()
    for secret in secrets:
        assert secret not in exposed


def test_loki_token_rotated_while_running(tmp_path: Path, shippers: list[Shipper]) -> None:
    volume = SecretVolume(tmp_path / "secret", {"loki-token": "token-one\n"})
    loki = FakeLoki(tmp_path / "loki", "--bearer", "token-one").start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 10)
        shipper = Shipper(
            tmp_path / "s", "--paths", str(log), "--sink", f"loki={loki.url}",
            "--batch-wait", "100ms", "--loki-bearer-token-file", str(volume.path("loki-token")),
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(lambda: loki.stats()["entries"] == 10, timeout=30, what="10 entries")

        # kubelet's rotation: a new version directory, then one rename of ..data. From then on
        # the fake Loki takes only the new token, so an old one would be a 401.
        volume.update({"loki-token": "token-two\n"})
        loki.control(authorization="Bearer token-two")
        write(log, 10, 20)
        wait_until(lambda: loki.stats()["entries"] == 20, timeout=30, what="20 entries")

        # An in-place rewrite of the same file (same inode).
        loki.control(authorization="Bearer token-333")
        with open(os.path.realpath(volume.path("loki-token")), "w") as out:
            out.write("token-333\n")
        write(log, 20, 30)
        wait_until(lambda: loki.stats()["entries"] == 30, timeout=30, what="30 entries")

        # Rotation in progress: ..data briefly gone. The last good token keeps working, and the
        # trouble is logged once however many batches meet it.
        volume.remove_data()
        for start in (30, 40, 50):
            write(log, start, start + 10)
            wait_until(
                lambda stop=start + 10: loki.stats()["entries"] == stop,
                timeout=30,
                what=f"{start + 10} entries",
            )
        assert shipper.output().count("secret file unusable, keeping the last good value") == 1
        volume.update({"loki-token": "token-four"})
        loki.control(authorization="Bearer token-four")
        write(log, 60, 70)
        wait_until(lambda: loki.stats()["entries"] == 70, timeout=30, what="70 entries")

        stats = loki.stats()
        assert stats["rejected_requests"] == 0, stats  # every batch carried the current token
        assert set(stats["authorizations"]) == {
            "Bearer token-one",
            "Bearer token-two",
            "Bearer token-333",
            "Bearer token-four",
        }
        assert shipper.metric("log_shipper_dropped_lines_total") == 0
        assert_not_exposed(shipper, "token-one", "token-two", "token-333", "token-four")
    finally:
        loki.stop()


def test_loki_401_during_a_rotation_is_retried_not_dropped(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    # The destination switched to the new credential before kubelet updated the volume (it
    # syncs within about a minute): batches wait, and go out once the file is rotated.
    volume = SecretVolume(tmp_path / "secret", {"password": "old-pw"})
    loki = FakeLoki(tmp_path / "loki", "--basic", "ann:new-pw").start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 10)
        url = loki.url.replace("://", "://ann@")
        shipper = Shipper(
            tmp_path / "s", "--paths", str(log), "--sink", f"loki={url}", "--batch-wait", "100ms",
            "--retry-initial", "50ms", "--retry-max", "200ms",
            "--loki-password-file", str(volume.path("password")),
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(lambda: loki.stats()["rejected_requests"] >= 2, timeout=30, what="401s")
        assert loki.stats()["entries"] == 0
        volume.update({"password": "new-pw"})
        wait_until(lambda: loki.stats()["entries"] == 10, timeout=30, what="10 entries")
        assert shipper.metric("log_shipper_dropped_lines_total") == 0
        assert loki.stats()["authorizations"].get("Basic " + _b64("ann:new-pw"), 0) >= 1
        assert_not_exposed(shipper, "old-pw", "new-pw")
    finally:
        loki.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_http_header_file_and_basic_auth_rotated(
    tmp_path: Path, shippers: list[Shipper], receiver: Receiver
) -> None:
    volume = SecretVolume(tmp_path / "secret", {"authorization": "Authorization: Bearer hdr-one\n"})
    receiver.control(authorization="Bearer hdr-one")
    log = tmp_path / "app.log"
    write(log, 0, 10)
    shipper = Shipper(
        tmp_path / "s", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "100ms", "--http-header-file", str(volume.path("authorization")),
    )  # fmt: skip
    shippers.append(shipper.start())
    wait_until(lambda: receiver.stats()["lines"] == 10, timeout=30, what="10 lines")
    volume.update({"authorization": "Authorization: Bearer hdr-two\n"})
    receiver.control(authorization="Bearer hdr-two")
    write(log, 10, 20)
    wait_until(lambda: receiver.stats()["lines"] == 20, timeout=30, what="20 lines")
    stats = receiver.stats()
    assert stats["rejected"] == 0, stats
    assert set(stats["authorizations"]) == {"Bearer hdr-one", "Bearer hdr-two"}
    assert_not_exposed(shipper, "hdr-one", "hdr-two")
    shipper.terminate()

    # Basic auth: the user in the URL, the password from its file.
    passwords = SecretVolume(tmp_path / "pw", {"password": "pw-one"})
    receiver.control(authorization="Basic " + _b64("ann:pw-one"))
    write(log, 20, 30)
    basic = Shipper(  # the same state file: it goes on from line 20
        tmp_path / "s", "--paths", str(log), "--batch-wait", "100ms",
        "--sink", f"http={receiver.url.replace('://', '://ann@')}",
        "--http-password-file", str(passwords.path("password")),
    )  # fmt: skip
    shippers.append(basic.start())
    wait_until(lambda: receiver.stats()["lines"] == 30, timeout=30, what="30 lines")
    assert receiver.stats()["rejected"] == 0
    assert_not_exposed(basic, "pw-one")


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_huge_file_rotated_in_is_refused_without_reading_it(
    tmp_path: Path, shippers: list[Shipper]
) -> None:
    # Memory as the attack: the Secret's key swapped for a 4 GiB (sparse) file. The shipper
    # reads at most 64 KiB of it, keeps the last good token and its peak RSS does not move.
    volume = SecretVolume(tmp_path / "secret", {"loki-token": "small-token"})
    loki = FakeLoki(tmp_path / "loki", "--bearer", "small-token").start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 10)
        shipper = Shipper(
            tmp_path / "s", "--paths", str(log), "--sink", f"loki={loki.url}",
            "--batch-wait", "100ms", "--loki-bearer-token-file", str(volume.path("loki-token")),
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(lambda: loki.stats()["entries"] == 10, timeout=30, what="10 entries")
        assert shipper.proc is not None
        before = vm_hwm_kib(shipper.proc.pid)
        volume.update({"loki-token": "placeholder"})
        with open(os.path.realpath(volume.path("loki-token")), "r+b") as out:
            out.truncate(4 * 1024**3)
        write(log, 10, 20)
        wait_until(lambda: loki.stats()["entries"] == 20, timeout=30, what="20 entries")
        assert vm_hwm_kib(shipper.proc.pid) - before < 8 * 1024, before
        assert "larger than 65536 bytes" in shipper.output()
        assert loki.stats()["rejected_requests"] == 0  # the last good token went on working
    finally:
        loki.stop()


# --- what a same-UID process without capabilities (nginx) can read through /proc ------------

SETPRIV = shutil.which("setpriv")
NO_CAPS = [SETPRIV or "setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def as_neighbour(*cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as this UID with every capability dropped, as the Pod's containers run."""
    return subprocess.run([*NO_CAPS, *cmd], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(
    SETPRIV is None or os.geteuid() != 0, reason="needs root and setpriv to drop capabilities"
)
@pytest.mark.parametrize("form", ["file", "env"])
def test_a_same_uid_neighbour_cannot_read_the_secret_through_proc(
    tmp_path: Path, shippers: list[Shipper], form: str
) -> None:
    volume = SecretVolume(tmp_path / "secret", {"loki-token": "neighbour-must-not-see"})
    loki = FakeLoki(tmp_path / "loki", "--bearer", "neighbour-must-not-see").start()
    try:
        log = tmp_path / "app.log"
        write(log, 0, 5)
        args = ["--paths", str(log), "--sink", f"loki={loki.url}", "--batch-wait", "100ms"]
        env = {}
        if form == "file":
            args += ["--loki-bearer-token-file", str(volume.path("loki-token"))]
        else:  # the inline form, as an env var (what the Pod spec would carry)
            env["LOG_SHIPPER_LOKI_BEARER_TOKEN"] = "neighbour-must-not-see"
        shipper = Shipper(tmp_path / "s", *args, env=env, prefix=NO_CAPS)
        shippers.append(shipper.start())
        wait_until(lambda: loki.stats()["entries"] == 5, timeout=30, what="5 entries")
        assert shipper.proc is not None
        pid = shipper.proc.pid
        status = as_neighbour("grep", "^CapEff", f"/proc/{pid}/status")
        assert status.stdout.split() == ["CapEff:", "0000000000000000"]  # the same footing
        # The neighbour probes every way in that /proc offers.
        secret_in_root = f"/proc/{pid}/root{volume.path('loki-token')}"
        for probe in (f"/proc/{pid}/environ", secret_in_root, f"/proc/{pid}/cmdline"):
            seen = as_neighbour(sys.executable, "-c", _READ, probe)
            assert "neighbour-must-not-see" not in seen.stdout, probe
        environ = as_neighbour(sys.executable, "-c", _READ, f"/proc/{pid}/environ")
        assert "Permission denied" in environ.stdout, environ
        root = as_neighbour(sys.executable, "-c", _READ, secret_in_root)
        assert "Permission denied" in root.stdout, root
    finally:
        loki.stop()


_READ = """
import sys
try:
    print(open(sys.argv[1], 'rb').read().replace(b'\\0', b' ').decode(errors='replace'))
except OSError as exc:
    print(exc)
"""
