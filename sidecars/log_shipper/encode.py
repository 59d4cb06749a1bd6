"""Batches -> wire formats. Pure, and written for speed: one string template per line, the
file's name escaped once per batch, no intermediate dict per line."""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from sidecars.log_shipper.sinks.base import Batch

_dumps_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def ndjson(batch: Batch) -> bytes:
    """One JSON object per line: ``{"ts_ns", "file", "offset", "line", "fields"}``; ``fields``
    is the parsed line (null when it did not parse or no format is set)."""
    path = encode_basestring(batch.path)
    bounds = batch.bounds
    if batch.fields is None:
        text = "\n".join(
            [
                f'{{"ts_ns":{stamp},"file":{path},"offset":{bounds[i]},'
                f'"line":{encode_basestring(line)},"fields":null}}'
                for i, (stamp, line) in enumerate(zip(batch.timestamps, batch.lines, strict=True))
            ]
        )
    else:
        fields = batch.fields
        text = "\n".join(
            [
                f'{{"ts_ns":{stamp},"file":{path},"offset":{bounds[i]},'
                f'"line":{encode_basestring(line)},'
                f'"fields":{"null" if fields[i] is None else _dumps_fields(fields[i])}}}'
                for i, (stamp, line) in enumerate(zip(batch.timestamps, batch.lines, strict=True))
            ]
        )
    return (text + "\n").encode("utf-8", "surrogatepass")


def loki_push(batch: Batch, labels: dict[str, str]) -> bytes:
    """A Loki push request (JSON) with the batch as one stream: ``labels`` plus ``filename``."""
    stream = json.dumps({**labels, "filename": batch.path}, ensure_ascii=False)
    values = ",".join(
        [
            f'["{stamp}",{encode_basestring(line)}]'
            for stamp, line in zip(batch.timestamps, batch.lines, strict=True)
        ]
    )
    return ('{"streams":[{"stream":' + stream + ',"values":[' + values + "]}]}").encode(
        "utf-8", "surrogatepass"
    )
