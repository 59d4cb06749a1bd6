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


def test_repeats_are_dropped_only_while_the_original_is_in_the_head_block() -> None:
    store = LokiStore(head_bytes=10)  # the head block is cut once it holds 10 bytes of lines
    push(store, {"job": "a"}, [["1", "aaaa"], ["2", "bbbb"]])
    push(store, {"job": "a"}, [["1", "aaaa"], ["3", "c"]])  # in the head: dropped
    assert store.counters["duplicates"] == 1
    push(store, {"job": "a"}, [["4", "dddddd"]])  # fills the head: it is cut before the next
    push(store, {"job": "a"}, [["1", "aaaa"], ["2", "bbbb"]])  # originals cut: stored again
    assert store.counters["stored_repeats"] == 2 and store.counters["head_cuts"] == 1
    assert store.log_count() == 4  # a log query merges the repeats
    assert store.metric_count() == 6  # a metric query counts them
    # ... and the repeats are now in the new head block: dropped once more.
    push(store, {"job": "a"}, [["2", "bbbb"]])
    assert store.counters["duplicates"] == 2 and store.metric_count() == 6


def test_the_head_block_is_also_cut_by_age() -> None:
    now = [0.0]
    store = LokiStore(head_seconds=5.0, clock=lambda: now[0])
    push(store, {"job": "a"}, [["1", "x"]])
    now[0] = 4.0
    push(store, {"job": "a"}, [["1", "x"]])
    assert store.counters["duplicates"] == 1
    now[0] = 6.0
    push(store, {"job": "a"}, [["1", "x"]])
    assert store.metric_count() == 2 and store.log_count() == 1


def test_streams_have_their_own_head_blocks() -> None:
    store = LokiStore(head_bytes=4)
    push(store, {"job": "a"}, [["1", "xxxx"]])
    push(store, {"job": "b"}, [["1", "xxxx"], ["2", "yyyy"]])
    push(store, {"job": "a"}, [["1", "xxxx"]])  # a's full head is cut: the repeat is stored
    assert store.counters["duplicates"] == 0 and store.counters["stored_repeats"] == 1
