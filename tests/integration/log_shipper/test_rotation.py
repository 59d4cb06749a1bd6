"""The shipper rotates a real nginx's logs (--rotate-bytes: rename + USR1 to the master) under
paced load, and keeps the volume under --max-held-bytes while its sink is down.

What could go wrong, each a test below:
- lines lost or read twice across nginx's reopen (the rename and the new file);
- rotated files piling up on the volume (deleted only once every sink acknowledged them);
- a sink down for long: the volume grows without bound, or data is dropped silently, or the
  rest is not delivered once it is back, or something is delivered twice;
- a stale pid file pointing at another process: it must never be signalled;
- the metrics-proxy tailing the same access log must count every request across the rotations.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.log_shipper.load import id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.integration.metrics_proxy.proxy import Proxy
from tests.support.logvolume import VolumeWatch, paced_load, process_tree
from tests.support.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KIB = 1024
ROTATE = 256 * KIB


def logged(shipper: Shipper) -> list[dict]:
    return [json.loads(x) for x in shipper.output().splitlines() if x.startswith("{")]


def rotated_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("access.log."))


def load(port: int, total: int, rate: float = 1500.0) -> None:
    """``total`` numbered requests (``/?id=N``) at about ``rate``/s."""
    paced_load(port, [f"/?id={i}" for i in range(total)], rate)


def test_rotation_under_load_delivers_every_request_once(
    tmp_path, nginx, receiver, shippers
):
    logs = nginx.app.log_dir
    cap = 2 * 1024 * KIB
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(logs / "access.log"),
        "--paths", str(logs / "error.log"),
        "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
        "--rotate-bytes", str(ROTATE),
        "--max-held-bytes", str(cap),
        "--rotate-wait", "1s",
    )  # fmt: skip
    shippers.append(shipper.start())
    proxy = Proxy(
        tmp_path / "proxy",
        "--stub-status-url", f"http://127.0.0.1:{nginx.app.status_port}/stub_status",
        "--access-log", str(nginx.access_log),
    )  # fmt: skip
    try:
        proxy.wait_ready()
        total = 30_000
        pids = [shipper.proc.pid, proxy.proc.pid, *process_tree(nginx.app.master_pid())]
        with VolumeWatch(logs, pids) as watch:
            load(nginx.port, total)

            def access() -> list[dict]:
                return [x for x in receiver.lines() if x["file"].endswith("access.log")]

            wait_until(lambda: len(access()) >= total, timeout=90, what=f"{total} lines")
        ids = [id_of(x["line"]) for x in access()]
        assert Counter(ids) == Counter(range(total)), "every request exactly once"
        assert {x["file"] for x in access()} == {str(logs / "access.log")}
        rotations = shipper.metric("log_shipper_rotations_total", result="ok")
        written = sum(len(x["line"].encode()) + 1 for x in access())
        # A file is rotated at the first look past the size (every 0.5 s): < 64 KiB later here.
        assert rotations >= written // (ROTATE + 64 * KIB), (rotations, written)
        # Volume: under the cap plus the two live files, sampled all along.
        print(f"logs volume peak: {watch.peak} bytes ({watch.samples} samples)")
        assert watch.peak <= cap + 2 * ROTATE, watch.peak
        # Every rotated file goes once acknowledged (and quiet for --rotate-wait).
        wait_until(lambda: not rotated_files(logs), timeout=30, what="rotated files deleted")
        assert shipper.metric("log_shipper_dropped_bytes_total") == 0
        deleted = [x for x in logged(shipper) if x["msg"].startswith("rotated file deleted")]
        assert len(deleted) == rotations

        # The metrics-proxy follows the same access log across the shipper's rotations.
        def counted() -> float | None:
            value = proxy.value("nginx_http_responses_total", status="200", method="GET")
            return value if value == total else None

        try:
            wait_until(counted, timeout=30, what="the proxy's count")
        except AssertionError:
            have = proxy.value("nginx_http_responses_total", status="200", method="GET")
            raise AssertionError(f"proxy counted {have} of {total}") from None
    finally:
        proxy.stop()
    assert shipper.terminate() == 0


def test_sink_down_past_the_cap_drops_oldest_counted_and_delivers_the_rest_once(
    tmp_path, nginx, receiver, shippers
):
    logs = nginx.app.log_dir
    cap = 1024 * KIB
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(logs / "access.log"),
        "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
        "--batch-bytes", "16KiB",
        "--queue-bytes", "64KiB",
        "--retry-initial", "100ms",
        "--retry-max", "500ms",
        "--rotate-bytes", str(ROTATE),
        "--max-held-bytes", str(cap),
        "--rotate-wait", "1s",
    )  # fmt: skip
    shippers.append(shipper.start())
    receiver.stop()  # the sink is down
    total = 40_000  # ~4 MB of access log: four times the cap
    pids = [shipper.proc.pid, *process_tree(nginx.app.master_pid())]
    with VolumeWatch(logs, pids) as watch:
        load(nginx.port, total)
        wait_until(
            lambda: shipper.metric("log_shipper_dropped_bytes_total", reason="retention") > 0,
            timeout=30,
            what="a retention drop",
        )
    print(f"logs volume peak: {watch.peak} bytes ({watch.samples} samples)")
    assert watch.peak <= cap + 2 * ROTATE, watch.peak
    # The cap is enforced at each retention pass (every 0.5 s): the gauge may lag one pass.
    wait_until(
        lambda: 0 < shipper.metric("log_shipper_held_bytes") <= cap,
        timeout=10,
        what="held bytes back under the cap",
    )

    receiver.start()  # the sink is back: the rest is delivered
    wait_until(
        lambda: shipper.metric("log_shipper_lag_bytes") == 0
        and shipper.metric("log_shipper_queue_bytes") == 0,
        timeout=90,
        what="the shipper caught up",
    )
    lines = [x["line"] for x in receiver.lines()]
    ids = [id_of(line) for line in lines]
    assert len(ids) == len(set(ids)), "nothing delivered twice"
    assert 0 < len(ids) < total
    missing = sorted(set(range(total)) - set(ids))
    # Every access line has the same length but for its id: the dropped bytes are exactly
    # the lines that never arrived, whole.
    fixed = {len(line.encode()) - len(str(i)) for line, i in zip(lines, ids, strict=True)}
    assert len(fixed) == 1, fixed
    (width,) = fixed
    expected = sum(width + len(str(i)) + 1 for i in missing)
    dropped = shipper.metric("log_shipper_dropped_bytes_total", reason="retention")
    assert dropped == expected, (dropped, expected, len(missing))
    warnings = [x for x in logged(shipper) if x["msg"].startswith("dropped the oldest")]
    assert warnings and sum(sum(w["dropped_bytes"].values()) for w in warnings) == dropped
    assert all(w["max_held_bytes"] == cap for w in warnings)
    # The newest lines are the ones kept: the drops are of the oldest files.
    assert max(missing) < max(ids)
    assert shipper.terminate() == 0


def test_a_pid_file_naming_another_process_is_never_signalled(tmp_path, receiver, shippers):
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        pidfile = tmp_path / "nginx.pid"
        pidfile.write_text(f"{stranger.pid}\n")
        log = tmp_path / "access.log"
        log.write_text("".join(f"line {i} {'x' * 100}\n" for i in range(3000)))  # > 256 KiB
        shipper = Shipper(
            tmp_path / "shipper",
            "--paths", str(log),
            "--sink", f"http={receiver.url}",
            "--batch-wait", "200ms",
            "--rotate-bytes", str(ROTATE),
            "--nginx-pidfile", str(pidfile),
            "--format", "none",
        )  # fmt: skip
        shippers.append(shipper.start())
        wait_until(lambda: len(receiver.lines()) >= 3000, timeout=30, what="3000 lines")
        wait_until(
            lambda: shipper.metric("log_shipper_rotations_total", result="no_master") >= 1,
            timeout=10,
            what="a refused rotation",
        )
        assert stranger.poll() is None, "the stranger was signalled"
        assert log.exists() and not list(tmp_path.glob("access.log.*")), "nothing renamed"
        warnings = [x for x in logged(shipper) if x["level"] == "warning" and "rotate" in x["msg"]]
        assert len(warnings) == 1 and "not an nginx master" in warnings[0]["reason"]
        assert shipper.terminate() == 0
    finally:
        stranger.kill()
        stranger.wait()


def test_rotated_files_waiting_for_a_down_sink_survive_a_shipper_crash(
    tmp_path, nginx, receiver, shippers
):
    logs = nginx.app.log_dir
    args = [
        "--paths", str(logs / "access.log"),
        "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
        "--retry-max", "500ms",
        "--rotate-bytes", str(ROTATE),
    ]  # fmt: skip
    shipper = Shipper(tmp_path / "shipper", *args)
    shippers.append(shipper.start())
    receiver.stop()
    total = 12_000  # ~900 KB: a few rotations, nothing acknowledged
    load(nginx.port, total)
    wait_until(
        lambda: shipper.metric("log_shipper_rotations_total", result="ok") >= 2,
        timeout=30,
        what="two rotations",
    )
    shipper.kill()  # SIGKILL with rotated, unacknowledged files on the volume
    assert rotated_files(logs)
    receiver.start()
    shipper.start()
    wait_until(lambda: len(receiver.lines()) >= total, timeout=60, what=f"{total} lines")
    ids = [id_of(x["line"]) for x in receiver.lines()]
    assert Counter(ids) == Counter(range(total)), "every request exactly once"
    wait_until(lambda: not rotated_files(logs), timeout=30, what="rotated files deleted")
    assert shipper.terminate() == 0


def test_a_rename_whose_signal_was_lost_is_completed_after_a_restart(
    tmp_path, nginx, receiver, shippers
):
    """The shipper died between the rename and the USR1: nginx still writes to the renamed
    file. The next shipper signals it again, and nothing is lost."""
    from sidecars.log_shipper.rotate import rotated_name

    logs = nginx.app.log_dir
    request_ids(nginx.port, range(100))
    renamed = Path(rotated_name(str(logs / "access.log"), time.time()))
    os.rename(logs / "access.log", renamed)
    request_ids(nginx.port, range(100, 200))  # still written to the renamed file
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(logs / "access.log"),
        "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
        "--rotate-bytes", str(ROTATE),
        "--rotate-wait", "1s",
    )  # fmt: skip
    shippers.append(shipper.start())
    wait_until((logs / "access.log").exists, timeout=15, what="nginx reopened access.log")
    request_ids(nginx.port, range(200, 300))  # into the new file
    wait_until(lambda: len(receiver.lines()) >= 300, timeout=30, what="300 lines")
    assert Counter(id_of(x["line"]) for x in receiver.lines()) == Counter(range(300))
    wait_until(lambda: not renamed.exists(), timeout=30, what="the renamed file deleted")
    assert shipper.terminate() == 0
