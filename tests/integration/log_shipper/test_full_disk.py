"""A full state volume (ENOSPC on the checkpoint write), against the real process: nothing
lost, nothing half-written, a clear error, recovery once space is back.

The state volume is a small tmpfs (root only; skipped otherwise). A full *logs* volume is
nginx's to report (its lines are not written); the shipper's side of it, a rotation that
cannot rename and a reopen nginx cannot do, is in tests/unit/log_shipper/test_rotation_logic.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.log_shipper.shipper import Shipper
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import wait_until
from tests.support.tmpfs import fill, tmpfs

pytestmark = pytest.mark.integration


def append(log: Path, first: int, count: int) -> None:
    with open(log, "a") as out:
        out.writelines(f"entry {i}\n" for i in range(first, first + count))


def test_a_full_state_volume_holds_shipping_back_and_loses_nothing(
    tmp_path: Path, shippers: list[Shipper], receiver: Receiver
) -> None:
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    append(log, 0, 100)
    with tmpfs(tmp_path / "state", "64k") as state_dir:
        state = state_dir / "state.json"
        shipper = Shipper(
            tmp_path / "shipper",
            "--paths", str(log),
            "--sink", f"http={receiver.url}",
            "--batch-wait", "100ms",
            "--checkpoint-interval", "200ms",
            state_file=state,
        )  # fmt: skip
        shippers.append(shipper.start())

        def shipped() -> list[str]:
            return [x["line"] for x in receiver.lines()]

        wait_until(lambda: len(shipped()) == 100, timeout=30, what="the first 100 lines")

        def failed_writes() -> float:
            return shipper.metric("log_shipper_state_writes_total", result="error")

        filler = fill(state_dir)
        append(log, 100, 100)
        wait_until(lambda: failed_writes() >= 1, timeout=30, what="a failed state write")
        # A failed write frees what its temp file took: take that too, then watch more fail.
        fill(state_dir)
        before, failed = state.read_bytes(), failed_writes()
        wait_until(lambda: failed_writes() >= failed + 2, timeout=30, what="more failed writes")
        # A batch is sent only once its boundary is durable: none is while the volume is full.
        assert len(shipped()) == 100
        assert state.read_bytes() == before, "the previous version, untouched"
        assert json.loads(before)["kind"] == "sidecars.log-shipper"
        assert sorted(p.name for p in state_dir.iterdir()) == ["filler", "state.json"], (
            "no temp file left behind"
        )
        assert shipper.proc.popen.poll() is None  # type: ignore[union-attr]
        error_lines = [
            json.loads(x)
            for x in shipper.output().splitlines()
            if x.startswith("{") and "cannot write state file" in x
        ]
        assert len(error_lines) == 1, "logged once, not once per retry"
        assert "No space left on device" in json.dumps(error_lines[0])
        filler.unlink()  # space is back
        wait_until(lambda: len(shipped()) == 200, timeout=30, what="the held-back 100 lines")
        wait_until(
            lambda: "state file writable again" in shipper.output(),
            timeout=30,
            what="the recovery logged",
        )
        assert shipper.terminate() == 0
    lines = shipped()
    assert Counter(lines) == Counter(f"entry {i}" for i in range(200)), "each line exactly once"
