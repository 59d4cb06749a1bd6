"""A stand-in for Loki's push API that enforces its documented contract (Loki itself cannot run
here: not packaged, and AGPL, so neither built nor vendored).

``python -m tests.support.fake_loki --port P`` serves ``POST /loki/api/v1/push`` as Loki does for
JSON pushes:

- body: JSON ``{"streams": [{"stream": {label: value}, "values": [["<ns>", "<line>"], ...]}]}``
  (a third element, structured metadata, is allowed); ``Content-Encoding: gzip`` honoured;
  ``Content-Type`` must be ``application/json`` (protobuf is not spoken here: 415);
- labels: at least one; names ``[a-zA-Z_][a-zA-Z0-9_]*``, not ``__``-prefixed; string values;
- timestamps: decimal strings of nanoseconds;
- ordering per stream (Loki >= 2.4, unordered writes): an entry older than the stream's newest
  by more than the out-of-order window (``--window``, Loki's max_chunk_age / 2 = 1h) is rejected
  with 400 "entry too far behind"; the rest of the push is still stored, as Loki does;
- de-duplication, as measured against a real Loki 3.x (../shared/E2E-NOTES.md): an entry with
  the same stream, timestamp and line as one still in the stream's *head block* is dropped
  silently (counted here as ``duplicates``); once the head block has been cut (here: when it
  holds ``--head-bytes`` of lines, Loki's ``chunk_block_size`` of 256 KiB, or is
  ``--head-seconds`` old), a repeat is *stored*. A log query (``query_range``) merges stored
  repeats at read time (``/stats`` ``entries``, ``/entries``); a metric query
  (``count_over_time``) counts every stored entry (``metric_entries``; ``stored_repeats`` is the
  difference);
- ``X-Scope-OrgID`` required with ``--tenant``; ``--basic user:pass`` / ``--bearer TOKEN`` check
  ``Authorization`` (401 otherwise); success is 204.

Test hooks: ``POST /control`` ``{"status": 429, "count": N}``, ``{"authorization": "Bearer
NEW"}`` (a rotated credential: from now on only that one is accepted), ``{"hang": true}``
(hold every push unanswered, counted in ``held``, until ``{"hang": false}``; a held push whose
sender has gone meanwhile is not stored: it never fully arrived); ``GET /stats`` (with
``authorizations``: requests per ``Authorization`` value received); ``GET /entries`` (per
stream: labels and entries in timestamp order, repeats merged as a log query does;
``?stored=1``: every stored entry, repeats included, as a metric query counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.procs import Proc, free_port, http_get, port_open, wait_until

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NS = re.compile(r"[0-9]{1,19}")
HOUR_NS = 3600 * 10**9
HEAD_BYTES = 256 * 1024  # Loki's chunk_block_size: the head block is cut at this size


class PushError(ValueError):
    pass


@dataclass
class _Stream:
    labels: dict[str, str]
    stored: list[tuple[int, str]] = field(default_factory=list)  # every entry, repeats too
    distinct: set[tuple[int, str]] = field(default_factory=set)  # what a log query returns
    head: set[tuple[int, str]] = field(default_factory=set)  # the head block: de-duplicated
    head_bytes: int = 0
    head_born: float = 0.0
    newest: int = 0


@dataclass
class LokiStore:
    window_ns: int = HOUR_NS
    tenant: str | None = None
    authorization: str | None = None
    head_bytes: int = HEAD_BYTES
    head_seconds: float = 0.0  # 0: the head block is cut by size only
    clock: Any = time.monotonic
    streams: dict[str, _Stream] = field(default_factory=dict)
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "requests": 0,
            "accepted": 0,
            "duplicates": 0,
            "stored_repeats": 0,
            "head_cuts": 0,
            "rejected_requests": 0,
            "too_far_behind": 0,
            "faults": 0,
            "gzip": 0,
            "held": 0,
            "abandoned": 0,
        }
    )
    fault_status: int = 0
    fault_count: int = 0
    authorizations: dict[str, int] = field(default_factory=dict)
    released: asyncio.Event | None = None  # cleared: pushes are held (made in the server loop)

    def push(self, payload: Any) -> list[str]:
        """Validate a whole push first (a malformed request stores nothing), then store it.
        Returns the per-entry rejections (Loki answers 400 listing them)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("streams"), list):
            raise PushError("payload must be an object with a 'streams' array")
        checked = []
        for stream in payload["streams"]:
            if not isinstance(stream, dict):
                raise PushError("each stream must be an object")
            labels = stream.get("stream")
            if not isinstance(labels, dict) or not labels:
                raise PushError("error parsing labels: a stream needs at least one label")
            for name, value in labels.items():
                if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                    raise PushError(f"error parsing labels: invalid label name {name!r}")
                if not isinstance(value, str):
                    raise PushError(f"error parsing labels: value of {name!r} is not a string")
            values = stream.get("values")
            if not isinstance(values, list):
                raise PushError("each stream needs a 'values' array")
            for entry in values:
                if not isinstance(entry, list) or len(entry) not in (2, 3):
                    raise PushError("an entry must be [timestamp, line] or [ts, line, metadata]")
                if not isinstance(entry[0], str) or not _NS.fullmatch(entry[0]):
                    raise PushError(f"timestamp must be a string of nanoseconds: {entry[0]!r}")
                if not isinstance(entry[1], str):
                    raise PushError("the log line must be a string")
            checked.append((labels, values))
        errors = []
        for labels, values in checked:
            key = json.dumps(labels, sort_keys=True)
            stream = self.streams.get(key)
            if stream is None:
                stream = self.streams[key] = _Stream(labels)
            for entry in values:
                ts, line = int(entry[0]), entry[1]
                self._maybe_cut(stream)
                if (ts, line) in stream.head:
                    self.counters["duplicates"] += 1
                    continue
                if ts < stream.newest - self.window_ns:
                    self.counters["too_far_behind"] += 1
                    errors.append(f"entry for stream {key} has timestamp too old: {ts}")
                    continue
                if (ts, line) in stream.distinct:
                    self.counters["stored_repeats"] += 1  # its original was cut already
                if not stream.head:
                    stream.head_born = self.clock()
                stream.head.add((ts, line))
                stream.head_bytes += len(line.encode())
                stream.stored.append((ts, line))
                stream.distinct.add((ts, line))
                stream.newest = max(stream.newest, ts)
                self.counters["accepted"] += 1
        return errors

    def _maybe_cut(self, stream: _Stream) -> None:
        """Cut the head block once it is full or old: its entries are no longer compared."""
        full = stream.head_bytes >= self.head_bytes
        old = self.head_seconds > 0 and self.clock() - stream.head_born >= self.head_seconds
        if stream.head and (full or old):
            stream.head.clear()
            stream.head_bytes = 0
            self.counters["head_cuts"] += 1

    def log_count(self) -> int:
        return sum(len(stream.distinct) for stream in self.streams.values())

    def metric_count(self) -> int:
        return sum(len(stream.stored) for stream in self.streams.values())


async def push(request: web.Request) -> web.Response:
    store: LokiStore = request.app["store"]
    store.counters["requests"] += 1
    body = await request.read()
    seen = request.headers.get("Authorization", "")
    store.authorizations[seen] = store.authorizations.get(seen, 0) + 1
    if store.released is not None and not store.released.is_set():
        store.counters["held"] += 1
        await store.released.wait()
        transport = request.transport
        if transport is None or transport.is_closing():
            store.counters["abandoned"] += 1
            return web.Response(status=499, text="the sender has gone")
    if store.fault_count > 0:
        store.fault_count -= 1
        store.counters["faults"] += 1
        return web.Response(status=store.fault_status, text="fault injected by the test")
    if store.authorization and request.headers.get("Authorization") != store.authorization:
        store.counters["rejected_requests"] += 1
        return web.Response(status=401, text="unauthorized")
    if store.tenant and request.headers.get("X-Scope-OrgID") != store.tenant:
        store.counters["rejected_requests"] += 1
        return web.Response(status=401, text="no org id")
    if request.content_type != "application/json":
        store.counters["rejected_requests"] += 1
        return web.Response(status=415, text="only application/json pushes are supported here")
    if request.headers.get("Content-Encoding") == "gzip":
        # aiohttp's server has already inflated the body (and answered 400 had it been
        # invalid gzip): count that the sender compressed.
        store.counters["gzip"] += 1
    try:
        errors = store.push(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        store.counters["rejected_requests"] += 1
        return web.Response(status=400, text=str(exc))
    if errors:
        return web.Response(status=400, text="\n".join(errors[:10]))
    return web.Response(status=204)


async def control(request: web.Request) -> web.Response:
    store: LokiStore = request.app["store"]
    order = await request.json()
    if "status" in order:
        store.fault_status, store.fault_count = int(order["status"]), int(order["count"])
    if "authorization" in order:
        store.authorization = order["authorization"]
    if "hang" in order:
        if store.released is None:
            store.released = asyncio.Event()
            store.released.set()
        (store.released.clear if order["hang"] else store.released.set)()
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    store: LokiStore = request.app["store"]
    return web.json_response(
        {
            **store.counters,
            "entries": store.log_count(),
            "metric_entries": store.metric_count(),
            "streams": len(store.streams),
            "authorizations": store.authorizations,
        }
    )


async def entries(request: web.Request) -> web.Response:
    store: LokiStore = request.app["store"]
    stored = request.query.get("stored") == "1"
    out = [
        {
            "labels": s.labels,
            "entries": [[str(ts), line] for ts, line in sorted(s.stored if stored else s.distinct)],
        }
        for s in store.streams.values()
    ]
    return web.json_response(out)


def build_app(store: LokiStore) -> web.Application:
    app = web.Application(client_max_size=256 * 1024**2)
    app["store"] = store
    app.router.add_post("/loki/api/v1/push", push)
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    app.router.add_get("/entries", entries)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=float, default=3600.0, help="out-of-order window, s")
    parser.add_argument("--tenant")
    parser.add_argument("--basic", help="user:pass")
    parser.add_argument("--bearer")
    parser.add_argument(
        "--head-bytes", type=int, default=HEAD_BYTES, help="head block cut at this many bytes"
    )
    parser.add_argument(
        "--head-seconds", type=float, default=0.0, help="head block cut at this age (0: off)"
    )
    args = parser.parse_args()
    authorization = None
    if args.basic:
        authorization = "Basic " + base64.b64encode(args.basic.encode()).decode()
    elif args.bearer:
        authorization = f"Bearer {args.bearer}"
    store = LokiStore(
        int(args.window * 10**9), args.tenant, authorization, args.head_bytes, args.head_seconds
    )
    web.run_app(build_app(store), host="127.0.0.1", port=args.port, print=None)


class FakeLoki:
    """The tests' handle on a fake Loki process."""

    def __init__(self, root: Path, *flags: str) -> None:
        self.root = root
        self.flags = list(flags)
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLoki:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "tests.support.fake_loki", "--port", str(self.port)]
        self.proc = Proc(
            args + self.flags, self.root / "fake_loki.out", cwd=Path(__file__).parents[2]
        )
        wait_until(lambda: port_open(self.port), timeout=15, what="fake loki port")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def _get(self, path: str) -> Any:
        status, body, _ = http_get(self.url + path, timeout=30)
        assert status == 200, body
        return json.loads(body)

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")  # type: ignore[no-any-return]

    def entries(self, stored: bool = False) -> list[dict[str, Any]]:
        """As a log query returns them (repeats merged); ``stored``: as a metric query counts."""
        return self._get("/entries?stored=1" if stored else "/entries")  # type: ignore[no-any-return]

    def control(self, **order: Any) -> None:
        request = urllib.request.Request(
            self.url + "/control",
            data=json.dumps(order).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


if __name__ == "__main__":
    main()
