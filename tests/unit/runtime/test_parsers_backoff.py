from __future__ import annotations

import pytest

from sidecars.runtime.backoff import Backoff, Deadline
from sidecars.runtime.parsers import (
    HostPort,
    parse_duration,
    parse_hex_sha256,
    parse_hostport,
    parse_size,
)


@pytest.mark.parametrize(
    ("raw", "value"), [("30", 30.0), ("2.5s", 2.5), ("250ms", 0.25), ("5m", 300.0), ("1h", 3600.0)]
)
def test_durations(raw: str, value: float) -> None:
    assert parse_duration(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1048576", 1048576),
        ("1MiB", 1048576),
        ("10MB", 10_000_000),
        ("512KiB", 524288),
        ("2gib", 2 * 1024**3),
        ("7B", 7),
    ],
)
def test_sizes(raw: str, value: int) -> None:
    assert parse_size(raw) == value


@pytest.mark.parametrize("raw", ["", "1.5MiB", "ten", "-1", "3 ZB"])
def test_bad_sizes(raw: str) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(raw)


def test_hostports() -> None:
    assert parse_hostport(":9101") == HostPort("0.0.0.0", 9101)
    assert parse_hostport("127.0.0.1:80") == HostPort("127.0.0.1", 80)
    assert str(parse_hostport("[::1]:8080")) == "[::1]:8080"
    for bad in ("9101", "host:", "a:b:c", "h:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


def test_sha256() -> None:
    digest = "ab" * 32
    assert parse_hex_sha256("sha256:" + digest.upper()) == digest
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_hex_sha256("abc")


def test_backoff_full_jitter_grows_to_cap() -> None:
    b = Backoff(initial=0.5, cap=4.0)
    assert [b.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.delay(3, rand=lambda: 1.0) == 4.0
    assert b.delay(3, rand=lambda: 0.0) == 0.0
    assert b.ceiling(10_000) == 4.0  # no overflow for huge attempt counts


def test_deadline_with_fake_clock() -> None:
    now = [100.0]
    d = Deadline(5.0, clock=lambda: now[0])
    assert d.remaining() == 5.0 and not d.expired()
    now[0] = 106.0
    assert d.remaining() == 0.0 and d.expired()
    assert Deadline(None).remaining() == float("inf")
