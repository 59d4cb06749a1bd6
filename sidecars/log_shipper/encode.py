"""Batches -> wire formats. Pure, and written for speed and a small footprint.

The batch is stored by column, so each format is built column-wise: every varying part of a
line (timestamp, offset, escaped text) comes from one C-level ``map`` over its column, the
constant parts are made once per batch, and the columns are interleaved by slice assignment
into one list that is joined and encoded at once. No per-line Python code runs except the JSON
escaping itself (``encode_basestring``, C).

The ``*_pieces`` forms yield the same bytes in pieces of ``PIECE_LINES`` lines, so a caller
that compresses as it goes never holds the whole uncompressed body and its intermediates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from sidecars.log_shipper.sinks.base import Batch

PIECE_LINES = 512  # ~130-200 KiB of NDJSON for nginx access lines

_dumps_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _fields_json(value: object) -> str:
    return "null" if value is None else _dumps_fields(value)


def _ndjson_text(batch: Batch, after_stamp: str, start: int, stop: int) -> str:
    count = stop - start
    stamps = batch.timestamps[start:stop]
    offsets = batch.bounds[start:stop]
    lines = batch.lines[start:stop]
    if batch.fields is None:
        # ts, after_stamp, offset, ',"line":', line, ',"fields":null}\n{"ts_ns":'
        parts = [',"fields":null}\n{"ts_ns":'] * (6 * count)
        parts[0::6] = map(str, stamps)
        parts[1::6] = [after_stamp] * count
        parts[2::6] = map(str, offsets)
        parts[3::6] = [',"line":'] * count
        parts[4::6] = map(encode_basestring, lines)
        parts[-1] = ',"fields":null}\n'
    else:
        parts = ['}\n{"ts_ns":'] * (8 * count)
        parts[0::8] = map(str, stamps)
        parts[1::8] = [after_stamp] * count
        parts[2::8] = map(str, offsets)
        parts[3::8] = [',"line":'] * count
        parts[4::8] = map(encode_basestring, lines)
        parts[5::8] = [',"fields":'] * count
        parts[6::8] = map(_fields_json, batch.fields[start:stop])
        parts[-1] = "}\n"
    return '{"ts_ns":' + "".join(parts)


def ndjson_pieces(batch: Batch, piece_lines: int = PIECE_LINES) -> Iterator[bytes]:
    """``ndjson(batch)`` in pieces of ``piece_lines`` lines."""
    after_stamp = ',"file":' + encode_basestring(batch.path) + ',"offset":'
    count = len(batch.lines)
    for start in range(0, count, piece_lines):
        stop = min(count, start + piece_lines)
        yield _ndjson_text(batch, after_stamp, start, stop).encode("utf-8", "surrogatepass")


def ndjson(batch: Batch) -> bytes:
    """One JSON object per line: ``{"ts_ns", "file", "offset", "line", "fields"}``; ``fields``
    is the parsed line (null when it did not parse or no format is set)."""
    return b"".join(ndjson_pieces(batch, max(1, len(batch.lines))))


def loki_push_pieces(
    batch: Batch, labels: dict[str, str], piece_lines: int = PIECE_LINES
) -> Iterator[bytes]:
    """``loki_push(batch, labels)`` in pieces of ``piece_lines`` lines."""
    stream = json.dumps({**labels, "filename": batch.path}, ensure_ascii=False)
    head = '{"streams":[{"stream":' + stream + ',"values":['
    count = len(batch.lines)
    if not count:
        yield (head + "]}]}").encode("utf-8", "surrogatepass")
        return
    for start in range(0, count, piece_lines):
        stop = min(count, start + piece_lines)
        # ["<ts>",<line>],["<ts>",<line>],...
        parts = ['],["'] * (4 * (stop - start))
        parts[0::4] = map(str, batch.timestamps[start:stop])
        parts[1::4] = ['",'] * (stop - start)
        parts[2::4] = map(encode_basestring, batch.lines[start:stop])
        parts[-1] = "]]}]}" if stop == count else "],"
        text = (head if start == 0 else "") + '["' + "".join(parts)
        yield text.encode("utf-8", "surrogatepass")


def loki_push(batch: Batch, labels: dict[str, str]) -> bytes:
    """A Loki push request (JSON) with the batch as one stream: ``labels`` plus ``filename``."""
    return b"".join(loki_push_pieces(batch, labels, max(1, len(batch.lines))))
