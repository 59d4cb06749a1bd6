"""The served state file: round trip, and what is refused from a file someone else wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecars.config_fetcher.publish import Published
from sidecars.config_fetcher.served import STATE_NAME, Rejected, ServedState, ServedStore

V1 = Published(version="..2026_12_01_08_00_00.000000001_aaaaaaaaaaaa", digest="a" * 64)
V2 = Published(version="..2026_12_01_08_00_01.000000001_bbbbbbbbbbbb", digest="b" * 64)


def test_round_trip(tmp_path: Path) -> None:
    store = ServedStore(tmp_path)
    assert store.load() == (ServedState(), None)
    state = ServedState().accept(V1).reject(Rejected(V2.digest, V2.version, "[emerg] x"))
    store.save(state)
    assert store.load() == (state, None)
    store.save(state.forget_rejected())
    assert store.load()[0] == ServedState(served=V1)


@pytest.mark.parametrize("version", ["../../etc", "..data", "plain", "..a/b", STATE_NAME, 5, None])
def test_a_version_naming_something_else_is_refused(tmp_path: Path, version: object) -> None:
    doc = {
        "kind": "config-fetcher-served",
        "version": 1,
        "data": {"served": {"version": version, "digest": "a"}, "rejected": None},
    }
    (tmp_path / STATE_NAME).write_text(json.dumps(doc))
    state, problem = ServedStore(tmp_path).load()
    assert state == ServedState()
    assert problem is not None and "wrong shape" in problem
    assert not (tmp_path / STATE_NAME).exists(), "set aside for inspection"


def test_a_torn_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text('{"kind": "config-fetcher-served", "vers')
    state, problem = ServedStore(tmp_path).load()
    assert state == ServedState() and problem is not None and "not valid JSON" in problem
