"""The wire encoders against the json module as the oracle, and gzip in pieces (igzip and zlib)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.log_shipper.encode import loki_push, loki_push_pieces, ndjson, ndjson_pieces
from sidecars.log_shipper.sinks import compression
from sidecars.log_shipper.sinks.base import Batch

# Text as the tailer produces it (decoded with "replace") plus what other callers may pass:
# quotes, backslashes, every control character, non-ASCII, lone surrogates.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\/\t\x00\x1f\x7f\u2028é\ufffd😀 []{}%'),
        st.characters(codec="utf-8"),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
    max_size=40,
)
FIELDS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["status", "uri"]), TEXT))


@st.composite
def batches(draw: Any) -> Batch:
    lines = draw(st.lists(TEXT, min_size=1, max_size=30))
    start = draw(st.integers(0, 2**40))
    bounds = [start]
    for line in lines:
        bounds.append(bounds[-1] + len(line.encode("utf-8", "surrogatepass")) + 1)
    stamps = draw(st.lists(st.integers(0, 2**63), min_size=len(lines), max_size=len(lines)))
    fields = draw(st.one_of(st.none(), st.lists(FIELDS, min_size=len(lines), max_size=len(lines))))
    return Batch(draw(TEXT), "fp", lines, bounds, stamps, fields)


def dumps(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "surrogatepass")


def reference_ndjson(batch: Batch) -> bytes:
    return b"".join(
        dumps(
            {
                "ts_ns": batch.timestamps[i],
                "file": batch.path,
                "offset": batch.bounds[i],
                "line": line,
                "fields": None if batch.fields is None else batch.fields[i],
            }
        )
        + b"\n"
        for i, line in enumerate(batch.lines)
    )


@settings(max_examples=300, deadline=None)
@given(batch=batches(), piece_lines=st.integers(1, 8))
def test_ndjson_is_what_json_dumps_writes_in_any_pieces(batch: Batch, piece_lines: int) -> None:
    expected = reference_ndjson(batch)
    assert ndjson(batch) == expected
    assert b"".join(ndjson_pieces(batch, piece_lines)) == expected


@settings(max_examples=300, deadline=None)
@given(batch=batches(), piece_lines=st.integers(1, 8), job=TEXT)
def test_loki_push_is_what_json_dumps_writes_in_any_pieces(
    batch: Batch, piece_lines: int, job: str
) -> None:
    stream = json.dumps({"job": job, "filename": batch.path}, ensure_ascii=False)
    values = dumps(
        [[str(ts), line] for ts, line in zip(batch.timestamps, batch.lines, strict=True)]
    )
    expected = (
        ('{"streams":[{"stream":' + stream + ',"values":').encode("utf-8", "surrogatepass")
        + values
        + b"}]}"
    )
    assert loki_push(batch, {"job": job}) == expected
    assert b"".join(loki_push_pieces(batch, {"job": job}, piece_lines)) == expected


def test_empty_batch_encodings() -> None:
    empty = Batch("/l", "fp", [], [0], [], None)
    assert ndjson(empty) == b""
    assert json.loads(loki_push(empty, {})) == {
        "streams": [{"stream": {"filename": "/l"}, "values": []}]
    }


PAYLOAD = b"".join(b'{"line":"GET /item/%d HTTP/1.1","n":%d}\n' % (i, i * i) for i in range(20_000))


@pytest.mark.parametrize("prefer_isal", [True, False], ids=["igzip", "zlib"])
@pytest.mark.parametrize("level", [1, 3, 6, 9])
def test_gzip_is_one_standard_member(prefer_isal: bool, level: int) -> None:
    packed = compression.gzip(PAYLOAD, level, prefer_isal=prefer_isal)
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == PAYLOAD
    assert len(packed) < len(PAYLOAD) / 4


def test_igzip_is_used_for_levels_1_to_3_when_installed() -> None:
    assert compression.isal_zlib is not None, "isal is a dependency of sidecars"
    assert type(compression.compressor(1)).__module__.startswith("isal")
    assert type(compression.compressor(4)).__module__ == "zlib"
    assert type(compression.compressor(1, prefer_isal=False)).__module__ == "zlib"


@pytest.mark.parametrize("prefer_isal", [True, False], ids=["igzip", "zlib"])
async def test_pieces_compress_to_the_whole(prefer_isal: bool) -> None:
    pieces = [PAYLOAD[i : i + 70_001] for i in range(0, len(PAYLOAD), 70_001)]
    body, headers = await compression.encode_pieces(iter(pieces), 1, prefer_isal=prefer_isal)
    assert headers == {"Content-Encoding": "gzip"}
    assert gzip.decompress(body) == PAYLOAD
    assert await compression.encode_pieces(iter(pieces), 0) == (PAYLOAD, {})
    body, _ = await compression.encode_pieces(iter([]), 1, prefer_isal=prefer_isal)
    assert gzip.decompress(body) == b""
