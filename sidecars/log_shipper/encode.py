"""Batches -> wire formats. Pure, and written for speed and a small footprint.

The batch is stored by column, so each format is built column-wise in bytes: every varying part
of a line (timestamp, offset, escaped text) comes as one list from C-level operations over its
column, the constant parts are made once, and the columns are interleaved by slice assignment
into one list that is joined once. No Python code runs per line.

Escaping the lines is most of the work. JSON needs ``"``, ``\\`` and the control characters
escaped; nginx's access log already escapes control characters itself, so usually only quotes
(and rarely backslashes) occur. The fast path escapes a whole piece at once with two
``bytes.replace`` calls once ``memchr``-speed ``in`` tests have shown it holds no control
character; any other text takes the general path (``encode_basestring`` per line), which gives
the same bytes.

The ``*_pieces`` forms yield the output in pieces of ``PIECE_LINES`` lines, so a caller that
compresses as it goes never holds the whole uncompressed body and its intermediates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from sidecars.log_shipper.chunk_fields import Deferred
from sidecars.log_shipper.sinks.base import Batch

PIECE_LINES = 128  # ~45 KiB of NDJSON for nginx access lines (fields doubled that; memory)

_CONTROL = [bytes([code]) for code in range(32) if code != 0x0A]  # newline joins the lines
_decimal = b"%d".__mod__
_dumps_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _escaped(lines: list[str], joined: bytes | None = None) -> tuple[list[bytes], bool]:
    """The lines as JSON string contents, UTF-8; True when each still needs its quotes.
    ``joined``: the lines joined by newlines as UTF-8, if the caller has it already."""
    if joined is None:
        joined = _utf8("\n".join(lines))
    if not any(control in joined for control in _CONTROL):
        if b"\\" in joined:
            joined = joined.replace(b"\\", b"\\\\")
        if b'"' in joined:
            joined = joined.replace(b'"', b'\\"')
        escaped = joined.split(b"\n")
        if len(escaped) == len(lines):  # else a line held a newline of its own
            return escaped, False
    # Rare: escape line by line; "\n" cannot occur in the output, so it splits them again.
    return _utf8("\n".join(map(encode_basestring, lines))).split(b"\n"), True


def _fields(values: list[object], lines: list[str], joined: bytes) -> list[bytes]:
    """The fields column as JSON texts (UTF-8); ``Deferred`` entries (chunk_fields) are parsed
    from their lines now, in one pass per marker. ``joined``: the lines as ``_escaped`` takes
    them."""
    first = values[0]
    if first.__class__ is Deferred and values.count(first) == len(values):
        return first.json_utf8(lines, joined)  # type: ignore[attr-defined,no-any-return]
    texts = ["null" if value is None else "" if value.__class__ is Deferred
             else _dumps_fields(value) for value in values]  # fmt: skip
    deferred: dict[Deferred, list[int]] = {}
    for index, value in enumerate(values):
        if value.__class__ is Deferred:
            deferred.setdefault(value, []).append(index)  # type: ignore[arg-type]
    for marker, indices in deferred.items():
        for index, text in zip(indices, marker.json([lines[i] for i in indices]), strict=True):
            texts[index] = text
    # Compact JSON never holds a raw newline, so one join/split turns it all into bytes at once.
    return _utf8("\n".join(texts)).split(b"\n")


def _ndjson_piece(batch: Batch, after_stamp: bytes, start: int, stop: int) -> bytes:
    count = stop - start
    texts = batch.lines[start:stop]
    joined = _utf8("\n".join(texts))
    if batch.fields is not None:
        values = batch.fields[start:stop]
        first = values[0]
        if first.__class__ is Deferred and values.count(first) == count:
            # Lines parsed in one pass: their text and fields come out as bytes together.
            tails = first.tails(texts, joined)  # type: ignore[attr-defined]
            if tails is not None:
                head = b'{"ts_ns":%d' + after_stamp.replace(b"%", b"%%") + b'%d,"line":"'
                records = [b""] * (3 * count)
                records[1::3], records[2::3] = tails
                records[0::3] = map(
                    head.__mod__,
                    zip(batch.timestamps[start:stop], batch.bounds[start:stop], strict=True),
                )
                return b"".join(records)
    lines, quoted = _escaped(texts, joined)
    open_line, close_line = (b',"line":', b"") if quoted else (b',"line":"', b'"')
    # '<ts>,"file":"...","offset":<offset>,"line":"' formatted in one call per line
    head = (b"%d" + after_stamp.replace(b"%", b"%%") + b"%d" + open_line).__mod__
    heads = map(head, zip(batch.timestamps[start:stop], batch.bounds[start:stop], strict=True))
    if batch.fields is None:
        # head, line, close_line + ',"fields":null}\n{"ts_ns":'
        parts = [close_line + b',"fields":null}\n{"ts_ns":'] * (3 * count)
        parts[0::3] = heads
        parts[1::3] = lines
        parts[-1] = close_line + b',"fields":null}\n'
    else:
        # head, line, close_line + ',"fields":', fields, '}\n{"ts_ns":'
        parts = [b'}\n{"ts_ns":'] * (5 * count)
        parts[0::5] = heads
        parts[1::5] = lines
        parts[2::5] = [close_line + b',"fields":'] * count
        parts[3::5] = _fields(batch.fields[start:stop], texts, joined)
        parts[-1] = b"}\n"
    return b'{"ts_ns":' + b"".join(parts)


def ndjson_pieces(batch: Batch, piece_lines: int = PIECE_LINES) -> Iterator[bytes]:
    """``ndjson(batch)`` in pieces of ``piece_lines`` lines."""
    after_stamp = _utf8(',"file":' + encode_basestring(batch.path) + ',"offset":')
    count = len(batch.lines)
    for start in range(0, count, piece_lines):
        yield _ndjson_piece(batch, after_stamp, start, min(count, start + piece_lines))


def ndjson(batch: Batch) -> bytes:
    """One JSON object per line: ``{"ts_ns", "file", "offset", "line", "fields"}``; ``fields``
    is the parsed line (null when it did not parse or no format is set)."""
    return b"".join(ndjson_pieces(batch, max(1, len(batch.lines))))


def loki_push_pieces(
    batch: Batch, labels: dict[str, str], piece_lines: int = PIECE_LINES
) -> Iterator[bytes]:
    """``loki_push(batch, labels)`` in pieces of ``piece_lines`` lines."""
    stream = json.dumps({**labels, "filename": batch.path}, ensure_ascii=False)
    head = _utf8('{"streams":[{"stream":' + stream + ',"values":[')
    count = len(batch.lines)
    if not count:
        yield head + b"]}]}"
        return
    for start in range(0, count, piece_lines):
        stop = min(count, start + piece_lines)
        lines, quoted = _escaped(batch.lines[start:stop])
        open_line, close_line = (b'",', b"") if quoted else (b'","', b'"')
        # ["<ts>",<line>],["<ts>",<line>],...
        parts = [close_line + b'],["'] * (4 * (stop - start))
        parts[0::4] = map(_decimal, batch.timestamps[start:stop])
        parts[1::4] = [open_line] * (stop - start)
        parts[2::4] = lines
        parts[-1] = close_line + (b"]]}]}" if stop == count else b"],")
        yield (head if start == 0 else b"") + b'["' + b"".join(parts)


def loki_push(batch: Batch, labels: dict[str, str]) -> bytes:
    """A Loki push request (JSON) with the batch as one stream: ``labels`` plus ``filename``."""
    return b"".join(loki_push_pieces(batch, labels, max(1, len(batch.lines))))
