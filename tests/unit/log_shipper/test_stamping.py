"""The stamper's inlined access-log path gives exactly what ``time_in_text`` line by line gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.timestamps import TIE_BREAK, Stamper, time_in_text

TIMES = st.sampled_from(
    [
        "10/Oct/2000:13:55:36 -0700",
        "10/Oct/2000:13:55:37 -0700",
        "24/Nov/2026:00:00:00 +0000",
        "31/Feb/2026:00:00:00 +0000",  # the right shape, not a date
        "10/Xyz/2000:13:55:36 -0700",
        "10/Oct/2000:13:55:3",  # cut short
    ]
)
PREFIXES = st.sampled_from(["1.2.3.4 - - ", "", "x" * 199, "a [", "[", " "])
SUFFIXES = st.sampled_from(['] "GET / HTTP/1.1" 200 5', "]", "", " [10/Oct/2000:13:55:36 -0700]"])


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(PREFIXES) + "[" + draw(TIMES) + draw(SUFFIXES)
    if kind == 1:
        return "2024/01/02 03:04:05 [notice] 1#1: start"
    if kind == 2:
        return draw(st.text(alphabet=" []0123456789/:+-ADFNOSTaceglnoprtuvy", max_size=60))
    return draw(PREFIXES) + " [" + draw(TIMES) + draw(SUFFIXES)


def reference(anchor: int, texts: list[str], bounds: list[int]) -> list[int]:
    stamps = []
    for line, offset in zip(texts, bounds, strict=False):
        own = time_in_text(line)
        if own is not None:
            anchor = own
        stamps.append(anchor + offset % TIE_BREAK)
    return stamps


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(lines(), max_size=25), start=st.integers(0, 2**40), anchor=st.integers(0, 2**62)
)
def test_inlined_path_equals_time_in_text(texts: list[str], start: int, anchor: int) -> None:
    bounds = [start]
    for line in texts:
        bounds.append(bounds[-1] + len(line) + 1)
    stamper = Stamper(anchor)
    assert stamper.stamp(texts, None, bounds) == reference(anchor, texts, bounds)
    expected_anchor = anchor
    for line in texts:
        own = time_in_text(line)
        expected_anchor = expected_anchor if own is None else own
    assert stamper.anchor_ns == expected_anchor
