"""LineSplitter: exact offsets, long lines, and output independent of read boundaries."""

from __future__ import annotations

import random

import pytest

from sidecars.runtime.tail.lines import Lines, LineSplitter


def feed_all(splitter: LineSplitter, data: bytes, cuts: list[int]) -> Lines:
    out = Lines([], [0])
    position = 0
    for cut in [*cuts, len(data)]:
        piece = data[position:cut]
        got = splitter.feed(piece, position)
        if got.lines:
            assert got.bounds[0] == out.bounds[-1]
            out.lines += got.lines
            out.bounds += got.bounds[1:]
            out.long_lines += got.long_lines
        position = cut
    return out


def test_complete_lines_with_offsets_and_partial_held() -> None:
    splitter = LineSplitter(100)
    got = splitter.feed(b"ab\ncde\nf", 0)
    assert got.lines == [b"ab", b"cde"]
    assert got.bounds == [0, 3, 7]
    assert splitter.partial == b"f"
    got = splitter.feed(b"g\n", 8)
    assert got.lines == [b"fg"]
    assert got.bounds == [7, 10]


def test_empty_lines_are_lines() -> None:
    got = LineSplitter(10).feed(b"\n\nx\n", 0)
    assert got.lines == [b"", b"", b"x"]
    assert got.bounds == [0, 1, 2, 4]


def test_split_mode_cuts_pieces_with_real_offsets() -> None:
    splitter = LineSplitter(4, "split")
    got = splitter.feed(b"0123456789\nab\n", 0)
    assert got.lines == [b"0123", b"4567", b"89", b"ab"]
    assert got.bounds == [0, 4, 8, 11, 14]
    assert got.long_lines == 2


def test_truncate_mode_keeps_head_and_spans_whole_line() -> None:
    splitter = LineSplitter(4, "truncate")
    got = splitter.feed(b"0123456789\nab\n", 0)
    assert got.lines == [b"0123", b"ab"]
    assert got.bounds == [0, 11, 14]
    assert got.long_lines == 1


def test_truncate_mode_holds_only_max_bytes_of_an_endless_line() -> None:
    splitter = LineSplitter(1024, "truncate")
    position = 0
    for _ in range(10 * 1024):  # 10 MiB without a newline
        got = splitter.feed(b"x" * 1024, position)
        position += 1024
        assert got.lines == []
        assert len(splitter.partial) <= 1024
    got = splitter.feed(b"y\nnext\n", position)
    assert got.lines == [b"x" * 1024, b"next"]
    assert got.bounds == [0, position + 2, position + 7]


def test_split_mode_memory_bounded_for_endless_line() -> None:
    splitter = LineSplitter(1000, "split")
    position = 0
    emitted = 0
    for _ in range(100):
        got = splitter.feed(b"z" * 4096, position)
        position += 4096
        emitted += sum(map(len, got.lines))
        assert len(splitter.partial) <= 1000
    assert emitted + len(splitter.partial) == position


def test_skip_to_newline_starts_at_next_line() -> None:
    splitter = LineSplitter(100)
    splitter.reset(5, skip_to_newline=True)
    got = splitter.feed(b"tail of old\nfresh\n", 5)
    assert got.lines == [b"fresh"]
    assert got.bounds == [17, 23]
    assert got.long_lines == 0


def test_invalid_utf8_and_binary_pass_through_as_bytes() -> None:
    data = b"\xff\xfe\x00bin\x80\n\xc3\x28\n"
    got = LineSplitter(100).feed(data, 0)
    assert got.lines == [b"\xff\xfe\x00bin\x80", b"\xc3\x28"]


@pytest.mark.parametrize("mode", ["split", "truncate"])
@pytest.mark.parametrize("seed", range(20))
def test_same_output_whatever_the_read_boundaries(mode: str, seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(
        b"x" * rng.choice([0, 1, 5, 15, 16, 17, 33, 80]) + b"\n" for _ in range(60)
    ) + b"x" * rng.randint(0, 40)
    whole = feed_all(LineSplitter(16, mode), data, [])  # type: ignore[arg-type]
    cuts = sorted(rng.sample(range(1, len(data)), 15))
    pieces = feed_all(LineSplitter(16, mode), data, cuts)  # type: ignore[arg-type]
    assert pieces.lines == whole.lines
    assert pieces.bounds == whole.bounds
    # every line's bytes are where its bounds say (split mode loses nothing)
    if mode == "split":
        for line, start, end in zip(whole.lines, whole.bounds, whole.bounds[1:], strict=False):
            assert data[start : start + len(line)] == line
            assert end - start in (len(line), len(line) + 1)
