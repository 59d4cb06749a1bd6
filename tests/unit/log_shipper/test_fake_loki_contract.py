"""The fake Loki really enforces the push contract (so tests against it can fail)."""

from __future__ import annotations

import pytest

from tests.support.fake_loki import HOUR_NS, LokiStore, PushError


def push(store: LokiStore, labels: dict, values: list) -> list[str]:
    return store.push({"streams": [{"stream": labels, "values": values}]})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "'streams' array"),
        ({"streams": [{"stream": {}, "values": []}]}, "at least one label"),
        ({"streams": [{"stream": {"1bad": "x"}, "values": []}]}, "invalid label name"),
        ({"streams": [{"stream": {"__name": "x"}, "values": []}]}, "invalid label name"),
        ({"streams": [{"stream": {"a": 1}, "values": []}]}, "not a string"),
        ({"streams": [{"stream": {"a": "x"}, "values": [[1, "l"]]}]}, "string of nanoseconds"),
        ({"streams": [{"stream": {"a": "x"}, "values": [["1.5", "l"]]}]}, "nanoseconds"),
        ({"streams": [{"stream": {"a": "x"}, "values": [["1", 2]]}]}, "must be a string"),
    ],
)
def test_malformed_pushes_are_rejected_whole(payload: dict, message: str) -> None:
    store = LokiStore()
    with pytest.raises(PushError, match=message):
        store.push(payload)
    assert store.streams == {}


def test_identical_entries_are_deduplicated_distinct_ones_kept() -> None:
    store = LokiStore()
    assert push(store, {"job": "a"}, [["10", "x"], ["10", "y"]]) == []
    assert push(store, {"job": "a"}, [["10", "x"], ["11", "x"]]) == []
    assert store.counters["duplicates"] == 1
    assert store.counters["accepted"] == 3


def test_entries_too_far_behind_the_stream_are_rejected() -> None:
    store = LokiStore()
    push(store, {"job": "a"}, [[str(2 * HOUR_NS), "new"]])
    errors = push(store, {"job": "a"}, [[str(HOUR_NS - 1), "old"], [str(HOUR_NS + 1), "ok"]])
    assert len(errors) == 1 and "too old" in errors[0]
    assert store.counters["accepted"] == 2
    # another stream has its own ordering
    assert push(store, {"job": "b"}, [["1", "old is fine here"]]) == []
