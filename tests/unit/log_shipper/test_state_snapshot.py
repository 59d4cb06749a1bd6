"""The state written by the writer thread is a snapshot: the event loop changing the live state
meanwhile (batches cut, acknowledged) never reaches the bytes being written."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from sidecars.log_shipper.state import Checkpointer, SinkProgress, StreamState, encode


def _lists(value: Any) -> list[list[Any]]:
    if isinstance(value, list):
        return [value, *(inner for item in value for inner in _lists(item))]
    if isinstance(value, dict):
        return [inner for item in value.values() for inner in _lists(item)]
    return []


def test_encode_shares_no_list_with_the_live_state() -> None:
    progress = SinkProgress(10, 3, [20, 30])
    streams = {"fp": StreamState("/log", 5, 6.5, {"http=x": progress})}
    data = encode(streams)
    live = {id(progress.pending)}
    assert not [found for found in _lists(data) if id(found) in live]
    progress.pending.append(40)
    progress.pending.pop(0)
    assert data["streams"]["fp"]["sinks"]["http=x"]["pending"] == [20, 30]


async def test_changes_during_a_write_are_not_in_that_write(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path / "state.json", ["http=x"], 3600.0)
    checkpointer.stream("fp", "/log")
    checkpointer.progress("fp", "http=x", 0)
    checkpointer.cut("fp", "http=x", 100)
    in_save = threading.Event()
    may_finish = threading.Event()
    saved: list[str] = []
    real_save = checkpointer.file.save

    def slow_save(data: dict[str, Any]) -> None:  # on the writer thread
        in_save.set()
        assert may_finish.wait(10)
        saved.append(json.dumps(data))
        real_save(data)

    checkpointer.file.save = slow_save  # type: ignore[method-assign]
    write = asyncio.ensure_future(checkpointer.write())
    assert await asyncio.to_thread(in_save.wait, 10)
    # The loop goes on while the thread serialises: a batch acknowledged, two more cut.
    checkpointer.done("fp", "http=x", 100, None)
    checkpointer.cut("fp", "http=x", 200)
    checkpointer.cut("fp", "http=x", 300)
    may_finish.set()
    assert await write
    (written,) = saved
    progress = json.loads(written)["streams"]["fp"]["sinks"]["http=x"]
    assert progress == {"offset": 0, "anchor_ns": None, "pending": [100]}
    # ... and the next write has them.
    checkpointer.file.save = real_save  # type: ignore[method-assign]
    assert await checkpointer.write()
    on_disk = json.loads((tmp_path / "state.json").read_text())["data"]
    assert on_disk["streams"]["fp"]["sinks"]["http=x"]["pending"] == [200, 300]
