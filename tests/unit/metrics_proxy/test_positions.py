"""The metrics-proxy's saved access-log positions: decoding hostile state, pruning, writes."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.metrics_proxy.positions import (
    STATE_KIND,
    STATE_VERSION,
    Positions,
    decode,
    lock,
    patterns,
    start_at,
)

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


def test_with_positions_kept_the_shippers_rotated_names_are_followed_too() -> None:
    log = Path("/var/log/ng[x]/access.log")
    match = fnmatch.fnmatchcase
    (only,) = patterns(log, None)
    assert match(str(log), only) and not match("/var/log/ngx/access.log", only)
    live, rotated = patterns(log, Path("/state/positions.json"))
    assert live == only
    assert match("/var/log/ng[x]/access.log.20261201T120000.123456Z", rotated)
    for other in ("access.log.1", "access.log.1.gz", "access.log.20261201T120000.123456Z.gz"):
        assert not match(f"/var/log/ng[x]/{other}", rotated), other
    assert not match("/var/log/ngx/access.log.20261201T120000.123456Z", rotated)


def test_the_state_lock_is_exclusive_and_names_the_file(tmp_path: Path) -> None:
    state = tmp_path / "positions.json"
    fd = lock(state)
    try:
        with pytest.raises(ValueError, match="in use by another metrics-proxy"):
            lock(state)
    finally:
        os.close(fd)
    os.close(lock(state))  # free again once the holder closed it
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:
        with pytest.raises(ValueError, match="cannot create the lock"):
            lock(tmp_path / "ro" / "positions.json")
