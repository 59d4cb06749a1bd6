"""What the log-shipper remembers across restarts, and when it is written.

Per stream (a file's content, keyed by its fingerprint) and per sink:

- ``offset``: every line before it was acknowledged by that sink (or dropped for a reason that
  retrying cannot fix). After a restart the sink's reader resumes there.
- ``pending``: the end offsets of batches already cut for that sink but not acknowledged yet.
  A batch is sent only once its boundary is durable, so after a crash the same lines are cut
  into the same batches again, which keeps the HTTP sink's idempotency keys stable.
- ``anchor_ns``: the time of the last line before ``offset`` that carried one; lines without a
  time of their own are stamped from it, identically on a re-read.

Per stream also ``path`` (the name it had when first seen: its ``filename`` everywhere, stable
across rotation and restarts) and ``seen_ns`` (discovery time, the anchor before any line time is
known). A stream whose file has not been seen for ``forget_after`` seconds is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecars.runtime.checkpoint import StateFile
from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.log_shipper.state")

STATE_KIND = "sidecars.log-shipper"
STATE_VERSION = 1


@dataclass
class SinkProgress:
    offset: int = 0
    anchor_ns: int | None = None
    pending: list[int] = field(default_factory=list)


@dataclass
class StreamState:
    path: str
    seen_ns: int
    last_seen: float
    sinks: dict[str, SinkProgress] = field(default_factory=dict)


_MAX_INT = 2**63 - 1  # offsets are off_t, times int64 ns: a larger one crashes a seek later
# Thousands of files times a few sinks take a few MB; a larger file is set aside unread, so a
# hostile or runaway one costs no memory to refuse.
MAX_STATE_BYTES = 8 << 20


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{what} is not an integer from 0 to 2**63-1: {value!r}")
    return value


def decode(data: dict[str, Any]) -> dict[str, StreamState]:
    """The ``data`` payload -> streams; ValueError naming the first bad field."""
    streams_raw = data.get("streams")
    if not isinstance(streams_raw, dict):
        raise ValueError("'streams' is not an object")
    streams: dict[str, StreamState] = {}
    for fingerprint, raw in streams_raw.items():
        where = f"streams[{fingerprint!r}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
            raise ValueError(f"{where} has no 'path'")
        last_seen = raw.get("last_seen")
        if not isinstance(last_seen, int | float):
            raise ValueError(f"{where}.last_seen is not a number")
        sinks_raw = raw.get("sinks")
        if not isinstance(sinks_raw, dict):
            raise ValueError(f"{where}.sinks is not an object")
        sinks = {}
        for name, progress in sinks_raw.items():
            at = f"{where}.sinks[{name!r}]"
            if not isinstance(progress, dict):
                raise ValueError(f"{at} is not an object")
            anchor = progress.get("anchor_ns")
            pending = progress.get("pending", [])
            if not isinstance(pending, list):
                raise ValueError(f"{at}.pending is not a list")
            sinks[name] = SinkProgress(
                _int(progress.get("offset"), f"{at}.offset"),
                None if anchor is None else _int(anchor, f"{at}.anchor_ns"),
                [_int(end, f"{at}.pending[]") for end in pending],
            )
        streams[fingerprint] = StreamState(
            raw["path"], _int(raw.get("seen_ns"), f"{where}.seen_ns"), float(last_seen), sinks
        )
    return streams


def encode(streams: dict[str, StreamState]) -> dict[str, Any]:
    """A snapshot of ``streams`` that shares no mutable object with them: it is serialised on
    the writer thread while the event loop goes on appending to and popping from the live
    ``pending`` lists (json.dumps over a list being changed can write a torn or mixed state)."""
    return {
        "streams": {
            fingerprint: {
                "path": stream.path,
                "seen_ns": stream.seen_ns,
                "last_seen": round(stream.last_seen, 3),
                "sinks": {
                    name: {
                        "offset": progress.offset,
                        "anchor_ns": progress.anchor_ns,
                        "pending": list(progress.pending),  # a copy: see above
                    }
                    for name, progress in stream.sinks.items()
                },
            }
            for fingerprint, stream in streams.items()
        }
    }


class Checkpointer:
    """The in-memory state plus its writer.

    Every change bumps ``generation``; a write records the generation it contains. Acks are
    written at most every ``interval`` (a crash re-sends at most that much, which the sinks'
    de-duplication absorbs); a batch boundary that a sender waits for is written at once.
    """

    def __init__(self, path: Path, sink_keys: list[str], forget_after: float) -> None:
        self.file = StateFile(path, STATE_KIND, STATE_VERSION, max_bytes=MAX_STATE_BYTES)
        self.sink_keys = sink_keys
        self.forget_after = forget_after
        self.streams: dict[str, StreamState] = {}
        self.generation = 0
        self.durable = 0
        self.writes = 0
        self.write_failures = 0
        self.last_write_ok = True
        self._lock = asyncio.Lock()

    # --- start-up ------------------------------------------------------------------------------

    def load(self) -> str | None:
        """Read the state file; returns the problem when it was unusable (logged by caller)."""
        loaded = self.file.load()
        if loaded.data is not None:
            try:
                self.streams = decode(loaded.data)
            except ValueError as exc:
                loaded = self.file.set_aside(f"state file content is invalid: {exc}")
        problem = loaded.problem
        if problem is not None:
            log.error(
                "state file unusable; starting without it (files are read again from "
                "--start-position: nothing is lost, lines already shipped are sent again)",
                extra=kv(
                    state_file=str(self.file.path),
                    problem=problem,
                    moved_to=str(loaded.moved_to) if loaded.moved_to else None,
                ),
            )
        for stream in self.streams.values():
            for name in [name for name in stream.sinks if name not in self.sink_keys]:
                log.info(
                    "forgetting progress of a sink no longer configured",
                    extra=kv(sink=name, path=stream.path),
                )
                del stream.sinks[name]
        return problem

    def positions(self, sink: str) -> dict[str, int]:
        return {
            fingerprint: stream.sinks[sink].offset
            for fingerprint, stream in self.streams.items()
            if sink in stream.sinks
        }

    def replay(self, sink: str) -> dict[str, list[int]]:
        """Batch boundaries cut before a restart and not yet acknowledged."""
        return {
            fingerprint: list(stream.sinks[sink].pending)
            for fingerprint, stream in self.streams.items()
            if sink in stream.sinks and stream.sinks[sink].pending
        }

    # --- changes -------------------------------------------------------------------------------

    def stream(self, fingerprint: str, path: str) -> StreamState:
        stream = self.streams.get(fingerprint)
        if stream is None:
            stream = StreamState(path, time.time_ns(), time.time())
            self.streams[fingerprint] = stream
            self.generation += 1
        return stream

    def progress(self, fingerprint: str, sink: str, start: int) -> SinkProgress:
        """The sink's progress on a stream, created at ``start`` if new."""
        stream = self.streams[fingerprint]
        progress = stream.sinks.get(sink)
        if progress is None:
            progress = stream.sinks[sink] = SinkProgress(offset=start)
            self.generation += 1
        return progress

    def cut(self, fingerprint: str, sink: str, end: int) -> int:
        """A batch ending at ``end`` was cut; returns the generation that must be durable
        before it is sent."""
        progress = self.streams[fingerprint].sinks[sink]
        if not progress.pending or end > progress.pending[-1]:
            progress.pending.append(end)
            self.generation += 1
        return self.generation

    def done(self, fingerprint: str, sink: str, end: int, anchor_ns: int | None) -> None:
        """Every line of the stream before ``end`` is acknowledged (or dropped) by ``sink``."""
        stream = self.streams.get(fingerprint)
        if stream is None:
            return  # forgotten meanwhile
        progress = stream.sinks[sink]
        if end > progress.offset:
            progress.offset = end
            progress.anchor_ns = anchor_ns
        while progress.pending and progress.pending[0] <= end:
            progress.pending.pop(0)
        self.generation += 1

    def seen(self, fingerprints: set[str], now: float) -> None:
        """Files with these fingerprints are open; forget streams gone for too long."""
        for fingerprint in fingerprints:
            stream = self.streams.get(fingerprint)
            if stream is not None:
                stream.last_seen = now
        stale = [
            fingerprint
            for fingerprint, stream in self.streams.items()
            if fingerprint not in fingerprints and now - stream.last_seen > self.forget_after
        ]
        for fingerprint in stale:
            log.info(
                "forgetting a file not seen for a while",
                extra=kv(path=self.streams[fingerprint].path, fingerprint=fingerprint),
            )
            del self.streams[fingerprint]
        if stale:
            self.generation += 1

    # --- writing -------------------------------------------------------------------------------

    async def write(self) -> bool:
        """Write the current state if it changed; False (logged) when the write failed."""
        async with self._lock:
            generation = self.generation
            if generation == self.durable and self.writes:
                return True
            data = encode(self.streams)
            try:
                await asyncio.to_thread(self.file.save, data)
            except OSError as exc:
                self.write_failures += 1
                if self.last_write_ok:
                    log.error(
                        "cannot write state file; retrying (a restart now would re-send "
                        "more than usual)",
                        extra=kv(state_file=str(self.file.path), error=str(exc)),
                    )
                self.last_write_ok = False
                return False
            if not self.last_write_ok:
                log.info("state file writable again", extra=kv(state_file=str(self.file.path)))
            self.last_write_ok = True
            self.writes += 1
            self.durable = max(self.durable, generation)
            return True

    async def until_durable(self, generation: int) -> None:
        """Write until ``generation`` is on disk (retrying a failing write with a growing
        pause; the caller's deadline cancels)."""
        attempt = 0
        while self.durable < generation:
            if not await self.write():
                attempt += 1
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
