"""Faults, each ending with an exact count at the receiver: 0 lost, 0 duplicated."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.log_shipper.load import Background, id_of
from tests.integration.log_shipper.shipper import Shipper
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import http_get, wait_until

pytestmark = pytest.mark.integration


def http_shipper(root: Path, paths: list[str], *sinks: str, extra: tuple[str, ...] = ()) -> Shipper:
    args: list[str] = []
    for path in paths:
        args += ["--paths", path]
    for sink in sinks:
        args += ["--sink", sink]
    return Shipper(root, *args, "--batch-wait", "100ms", "--rotate-wait", "1s", *extra)


def ids_at(receiver: Receiver) -> Counter[int | None]:
    return Counter(id_of(x["line"]) for x in receiver.lines() if "access.log" in x["file"])


def wait_for_ids(receiver: Receiver, count: int, timeout: float = 60) -> Counter[int | None]:
    wait_until(
        lambda: sum(ids_at(receiver).values()) >= count, timeout=timeout, what=f"{count} lines"
    )
    return ids_at(receiver)


def test_rename_rotation_with_reopen_under_load(tmp_path, nginx, receiver, shippers):
    logs = nginx.app.log_dir
    shipper = http_shipper(tmp_path / "shipper", [str(logs / "access.log")], f"http={receiver.url}")
    shippers.append(shipper.start())
    with Background(nginx.port, range(0, 4000)) as load:
        for generation in (1, 2, 3):
            # A file renamed away before the shipper ever saw it under a watched name cannot be
            # found by any tailer (the glob names only access.log): rotate only files it opened,
            # as any real rotation cadence does (README: reading).
            wait_until(
                lambda g=generation: shipper.output().count('"reading file"') >= g,
                timeout=30,
                what=f"generation {generation} opened by the shipper",
            )
            wait_until(lambda: logs.joinpath("access.log").stat().st_size > 20_000, timeout=30)
            os.rename(logs / "access.log", logs / f"access.log.{generation}")
            nginx.app.reopen_logs()  # nginx keeps writing the old file until USR1 is handled
            wait_until(lambda: (logs / "access.log").exists(), timeout=10, what="reopened log")
        load.join()
    got = wait_for_ids(receiver, 4000)
    assert got == Counter(range(4000)), "every request once across three rotations"
    assert receiver.stats()["duplicates"] == 0


def test_copytruncate_under_load_copy_is_not_shipped_again(tmp_path, nginx, receiver, shippers):
    logs = nginx.app.log_dir
    access = logs / "access.log"
    shipper = http_shipper(
        tmp_path / "shipper", [str(logs / "access.log*")], f"http={receiver.url}"
    )
    shippers.append(shipper.start())
    with Background(nginx.port, range(0, 4000)) as load:
        for generation in (1, 2):
            wait_until(lambda: access.stat().st_size > 60_000, timeout=30, what="log grows")
            # what logrotate's copytruncate does: copy, then truncate in place
            shutil.copyfile(access, logs / f"access.log.{generation}")
            os.truncate(access, 0)
            # Two truncations within one look at the files (file notifications wake the reader
            # at most every 0.2 s) are seen as one: truncate again only once this one was seen,
            # as any real rotation cadence does.
            wait_until(
                lambda g=generation: shipper.metric("log_shipper_truncations_total") >= g,
                timeout=30,
                what=f"truncation {generation} seen by the shipper",
            )
        load.join()
    on_disk = Counter()
    for path in sorted(logs.glob("access.log*")):
        # Complete lines only. A copy taken while nginx was writing can end in the first part
        # of a line whose rest went to the live file and was destroyed by the truncation: that
        # line is lost (never terminated, so never shipped), though its id is on disk.
        complete = path.read_text().split("\n")[:-1]
        on_disk.update(id_of(line) for line in complete)

    wait_until(
        lambda: set(on_disk) <= set(ids_at(receiver)), timeout=60, what="all lines on disk shipped"
    )
    got = ids_at(receiver)
    assert max(got.values()) == 1, "nothing twice: the copies were recognised as shipped"
    assert set(got) <= set(range(4000))
    # Only lines written between a copy and its truncation may be missing (the truncation
    # destroyed them); everything still on disk arrived.
    assert set(on_disk) <= set(got)
    assert shipper.metric("log_shipper_truncations_total") >= 2


def test_a_copy_ending_mid_line_ships_every_complete_line_once(tmp_path, receiver, shippers):
    """What the copytruncate test above meets by chance under load, made to happen: the copy
    ends in the first part of a line (nginx was writing it), the rest of that line goes to the
    live file and is destroyed by the truncation. Every complete line arrives once; the torn
    one, never terminated, does not."""
    logs = tmp_path / "logs"
    logs.mkdir()
    access = logs / "access.log"
    write_lines(access, 0, 100)
    with open(access, "a") as out:
        out.write("GET /?id=100 written")  # the first part of line 100
    shipper = http_shipper(
        tmp_path / "shipper", [str(logs / "access.log*")], f"http={receiver.url}"
    )
    shippers.append(shipper.start())
    wait_for_ids(receiver, 100)
    shutil.copyfile(access, logs / "access.log.1")
    with open(access, "a") as out:
        out.write(" by the test\n")  # its rest, into the live file after the copy ...
    os.truncate(access, 0)  # ... destroyed here
    write_lines(access, 101, 200)
    wait_until(lambda: shipper.metric("log_shipper_truncations_total") >= 1, what="truncation seen")
    wait_until(
        lambda: any(
            '"path": "' + str(logs / "access.log.1") + '"' in line and '"fingerprint"' in line
            for line in shipper.output().splitlines()
        ),
        what="the copy's content recognised by the shipper",
    )
    got = wait_for_ids(receiver, 199)
    assert got == Counter(i for i in range(200) if i != 100), got
    assert receiver.stats()["duplicates"] == 0


def test_sigkill_mid_batch_and_restart_several_times(tmp_path, nginx, receiver, loki, shippers):
    logs = nginx.app.log_dir
    shipper = http_shipper(
        tmp_path / "shipper",
        [str(logs / "access.log")],
        f"http={receiver.url}",
        f"loki={loki.url}",
        extra=("--batch-bytes", "8KiB", "--checkpoint-interval", "2s"),
    )
    shippers.append(shipper.start())
    with Background(nginx.port, range(0, 5000)) as load:
        for _ in range(4):
            before = receiver.stats()["batches"]
            wait_until(lambda b=before: receiver.stats()["batches"] > b + 3, timeout=30)
            shipper.kill()  # mid-stream: batches in flight, acks not yet checkpointed
            shipper.start()
        load.join()
    got = wait_for_ids(receiver, 5000)
    assert got == Counter(range(5000)), "0 lost, 0 duplicated at the de-duplicating receiver"
    assert receiver.stats()["duplicates"] > 0, "re-sends happened and were absorbed by key"

    def loki_ids() -> Counter[int | None]:
        found = Counter()
        for stream in loki.entries():
            found.update(id_of(line) for _, line in stream["entries"])
        return found

    wait_until(lambda: sum(loki_ids().values()) >= 5000, timeout=60, what="loki entries")
    assert loki_ids() == Counter(range(5000)), "a log query sees every line once"
    # Each Loki acknowledgement is checkpointed before the next batch: a crash can repeat only
    # the batch in flight (8 KiB, ~55 access lines), which Loki stores again only if its head
    # block was cut in between (test_pod_life.py has the exact count for a clean cut).
    assert loki.stats()["stored_repeats"] <= 4 * 8192 // 100, loki.stats()


def write_lines(path: Path, start: int, stop: int) -> None:
    with open(path, "a") as out:
        out.writelines(f"GET /?id={i} written by the test\n" for i in range(start, stop))


def test_receiver_down_then_back(tmp_path, receiver, shippers):
    """The receiver stopped for 30 s, then started: retries with backoff meanwhile, still
    ready (a sink's outage is a metric, never the shipper's readiness), and every line shipped
    exactly once when it is back."""
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    shipper = http_shipper(
        tmp_path / "shipper", [str(log)], f"http={receiver.url}", extra=("--retry-max", "1s")
    )
    shippers.append(shipper.start())
    write_lines(log, 0, 1000)
    wait_for_ids(receiver, 1000)
    receiver.stop()
    write_lines(log, 1000, 3000)
    wait_until(lambda: shipper.metric("log_shipper_sink_up") == 0, timeout=10, what="sink down")
    outage_end = time.monotonic() + 30
    wait_until(lambda: time.monotonic() > outage_end, timeout=40, interval=0.2)
    assert shipper.metric("log_shipper_retries_total") > 0
    status, _, _ = http_get(f"http://127.0.0.1:{shipper.port}/readyz")
    assert status == 200, "a sink outage does not make the shipper unready"
    receiver.start()
    got = wait_for_ids(receiver, 3000)
    assert got == Counter(range(3000))
    wait_until(lambda: shipper.metric("log_shipper_sink_up") == 1, timeout=10, what="sink up")


def test_429_for_a_while(tmp_path, receiver, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    receiver.control(status=429, count=8)
    shipper = http_shipper(
        tmp_path / "shipper", [str(log)], f"http={receiver.url}", extra=("--retry-max", "200ms")
    )
    shippers.append(shipper.start())
    write_lines(log, 0, 2000)
    got = wait_for_ids(receiver, 2000)
    assert got == Counter(range(2000))
    assert receiver.stats()["faults"] == 8
    assert shipper.metric("log_shipper_retries_total", reason="http_429") == 8


def test_non_retryable_4xx_is_dropped_counted_and_shipping_goes_on(tmp_path, receiver, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    receiver.control(status=413, count=1)
    shipper = http_shipper(tmp_path / "shipper", [str(log)], f"http={receiver.url}")
    shippers.append(shipper.start())
    write_lines(log, 0, 10)
    wait_until(lambda: shipper.metric("log_shipper_dropped_lines_total", reason="http_413") == 10)
    write_lines(log, 10, 20)
    got = wait_for_ids(receiver, 10)
    assert got == Counter(range(10, 20))
    assert "batch rejected by the sink; dropped" in shipper.output()


def test_a_hanging_sink_does_not_stall_the_other(tmp_path, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    fast = Receiver(tmp_path / "fast").start()
    hanging = Receiver(tmp_path / "hanging").start()
    try:
        hanging.control(hang=True)
        shipper = http_shipper(
            tmp_path / "shipper",
            [str(log)],
            f"http={fast.url}",
            f"http={hanging.url}",
            extra=("--batch-bytes", "16KiB", "--queue-bytes", "64KiB", "--send-timeout", "2s"),
        )
        shippers.append(shipper.start())
        write_lines(log, 0, 20000)  # ~700 KiB: far more than the hanging sink's queue holds
        assert wait_for_ids(fast, 20000) == Counter(range(20000))
        assert hanging.stats()["lines"] == 0
        hanging_key = f"http={hanging.url}"
        # Each sink's reader notices the new file on its own (a notification, or its next poll
        # when the file appeared before its watcher was set up): wait until this one has read.
        wait_until(
            lambda: shipper.metric("log_shipper_read_lines_total", sink=hanging_key) > 0,
            timeout=10,
            what="the hanging sink's reader started",
        )
        assert shipper.metric("log_shipper_queue_bytes", sink=hanging_key) <= 64 * 1024
        assert shipper.metric("log_shipper_lag_bytes", sink=hanging_key) > 0
        hanging.control(hang=False)
        assert wait_for_ids(hanging, 20000) == Counter(range(20000))
    finally:
        fast.stop()
        hanging.stop()


def test_sigterm_flushes_and_checkpoints_within_drain_timeout(tmp_path, receiver, shippers):
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    shipper = http_shipper(
        tmp_path / "shipper",
        [str(log)],
        f"http={receiver.url}",
        extra=("--batch-wait", "30s", "--drain-timeout", "5s"),
    )
    shippers.append(shipper.start())
    write_lines(log, 0, 500)
    wait_until(lambda: shipper.metric("log_shipper_read_lines_total") == 500, what="read")
    assert receiver.stats()["lines"] == 0, "held in an open batch (30 s batch-wait)"
    started = time.monotonic()
    assert shipper.terminate() == 0
    assert time.monotonic() - started < 5
    assert ids_at(receiver) == Counter(range(500)), "flushed on SIGTERM"
    # the checkpoint covers them: a restart (same state file) sends nothing again
    shipper = http_shipper(tmp_path / "shipper", [str(log)], f"http={receiver.url}")
    shippers.append(shipper.start())
    write_lines(log, 500, 510)
    got = wait_for_ids(receiver, 510)
    assert got == Counter(range(510))
    assert receiver.stats()["duplicates"] == 0
