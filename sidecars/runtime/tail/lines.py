"""Bytes -> complete lines with exact file offsets. Pure logic, no I/O.

The output depends only on the file's bytes, never on how they were cut into reads: a re-read
after a crash yields the same lines at the same offsets, which the log-shipper's idempotency keys
and deterministic timestamps rely on.

Lines longer than ``max_line_bytes`` are either split into pieces of exactly ``max_line_bytes``
(every byte shipped, each piece has real offsets) or truncated (the first ``max_line_bytes``
shipped, the rest dropped; the line is emitted once its newline arrives so its end offset covers
the whole line). A partial line (no newline yet) is held, bounded by ``max_line_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

LongLines = Literal["split", "truncate"]


@dataclass(slots=True)
class Lines:
    """Complete lines (without their newline) and their boundaries: line ``i`` spans
    ``bounds[i]`` to ``bounds[i + 1]`` in the file (newline included); ``len(bounds) ==
    len(lines) + 1``, so ``bounds[-1]`` is where the next unread line starts."""

    lines: list[bytes]
    bounds: list[int]
    long_lines: int = 0  # over-long lines seen: pieces cut off by split, or lines truncated


@dataclass(slots=True)
class LineSplitter:
    max_line_bytes: int
    long_lines: LongLines = "split"
    # Bytes after the last newline, not yet a line; starts at file offset ``partial_start``.
    partial: bytes = b""
    partial_start: int = 0
    # truncate mode inside an over-long line: its first max_line_bytes are in ``partial`` and
    # everything else up to the newline is skipped (``skip_emit``: skip without emitting, used to
    # start reading mid-file at the next line).
    discarding: bool = False
    skip_emit: bool = False

    def reset(self, offset: int, *, skip_to_newline: bool = False) -> None:
        """Forget any partial line and continue at ``offset`` (after truncation, or to start at
        the end of a file: ``skip_to_newline`` drops the line already in progress there)."""
        self.partial, self.partial_start = b"", offset
        self.discarding = self.skip_emit = skip_to_newline

    def feed(self, data: bytes, position: int) -> Lines:
        """``data`` is the file's bytes starting at ``position`` (the caller's read position,
        i.e. just after the previous ``data``)."""
        if self.discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return Lines([], [self.partial_start])
            end = position + newline + 1
            held, start = self.partial, self.partial_start
            emit = not self.skip_emit
            self.discarding = self.skip_emit = False
            self.partial, self.partial_start = b"", end
            rest = self.feed(data[newline + 1 :], end)
            if not emit:
                return rest
            rest.lines.insert(0, held)
            rest.bounds.insert(0, start)
            rest.long_lines += 1
            return rest

        base = self.partial_start
        parts = data.split(b"\n")
        if self.partial:  # only the first line is joined to the held part, not the whole read
            parts[0] = self.partial + parts[0]
        tail = parts.pop()
        limit = self.max_line_bytes
        if parts and max(map(len, parts)) > limit:
            result = self._long(parts, base, limit)
        else:
            result = Lines(parts, list(accumulate([len(p) + 1 for p in parts], initial=base)))
        after = result.bounds[-1]
        if len(tail) > limit:
            if self.long_lines == "split":
                while len(tail) > limit:
                    result.lines.append(tail[:limit])
                    after += limit
                    result.bounds.append(after)
                    result.long_lines += 1
                    tail = tail[limit:]
            else:
                self.discarding = True
                tail = tail[:limit]
        self.partial, self.partial_start = tail, after
        return result

    def _long(self, parts: list[bytes], base: int, limit: int) -> Lines:
        lines: list[bytes] = []
        bounds = [base]
        long_lines = 0
        position = base
        for part in parts:
            size = len(part)
            if size <= limit:
                lines.append(part)
            elif self.long_lines == "split":
                # Pieces of exactly ``limit`` while more than ``limit`` remains, the same cut a
                # partial tail gets in feed(): identical output whatever the read boundaries.
                piece_start = 0
                while size - piece_start > limit:
                    lines.append(part[piece_start : piece_start + limit])
                    bounds.append(position + piece_start + limit)
                    piece_start += limit
                    long_lines += 1
                lines.append(part[piece_start:])
            else:
                lines.append(part[:limit])
                long_lines += 1
            position += size + 1
            bounds.append(position)
        return Lines(lines, bounds, long_lines)
