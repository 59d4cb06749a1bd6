"""The metrics-proxy's saved access-log positions: decoding hostile state, pruning, writes."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.metrics_proxy.positions import STATE_KIND, STATE_VERSION, Positions, decode, start_at

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), JSON, max_size=3) | st.fixed_dictionaries({"files": JSON})
)
def test_any_payload_decodes_or_is_a_value_error(data: dict[str, Any]) -> None:
    try:
        positions = decode(data)
    except ValueError:
        return
    assert all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in positions.values()
    )


def test_start_at() -> None:
    assert start_at("auto", Path("s.json")) == "beginning"
    assert start_at("auto", None) == "end"
    assert start_at("end", Path("s.json")) == "end"
    assert start_at("beginning", None) == "beginning"


def test_saved_positions_round_trip_and_forget_files_no_longer_followed(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    positions = Positions(path)
    assert positions.load() == {}
    positions.counted("aa", 10)
    positions.counted("bb", 20)
    assert positions.save(["aa", None])
    document = json.loads(path.read_text())
    assert (document["kind"], document["version"]) == (STATE_KIND, STATE_VERSION)
    assert Positions(path).load() == {"aa": 10}


def test_a_failed_write_keeps_the_previous_file_and_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "positions.json"
    positions = Positions(path)
    positions.counted("aa", 10)
    assert positions.save(["aa"])
    positions.counted("aa", 30)
    full = OSError(errno.ENOSPC, "No space left on device")
    with mock.patch("os.fsync", side_effect=full):
        assert not positions.save(["aa"])
        assert not positions.save(["aa"])
    assert Positions(path).load() == {"aa": 10}
    assert [r.message for r in caplog.records].count(
        "cannot write state file; retrying (a restart now would count the lines read since "
        "the last write again)"
    ) == 1
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    assert positions.save(["aa"])
    assert Positions(path).load() == {"aa": 30}
