"""The contract between the log-shipper pipeline and its sinks.

A sink receives batches of records (a ``Batch``: a Sequence[Record] of consecutive lines of one
file) and returns only once the destination has acknowledged them; a sink's offsets are
checkpointed only after it has returned. Failures are classified so
the pipeline knows whether to retry (connection errors, 429, 5xx) or drop with a reason.

A sink may split ``send`` in two (``PreparingSink``): ``prepare`` does the CPU work (encoding,
compression) and returns everything ``deliver`` needs to do the I/O. The pipeline then prepares
the next batch while the current one is being delivered (deliveries and their checkpoints stay
strictly in order), and lets go of a batch's lines once it is prepared, so memory holds the
compact wire form of the batches in flight rather than their lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload


@dataclass(frozen=True, slots=True)
class Record:
    line: str  # the log line without its newline; invalid UTF-8 replaced, never raised
    fields: dict[str, Any] | None  # parsed fields, or None when the line did not parse
    path: str  # the file it came from
    fingerprint: str  # identity of that file (survives renames; differs for a reused inode)
    offset: int  # byte offset of the line's start in that file
    end: int  # byte offset just after the line (the checkpoint once acknowledged)
    timestamp_ns: int  # deterministic: same line, same value, also when re-read after a crash


class Batch(Sequence[Record]):
    """The records a sink receives: consecutive lines of one file, stored by column.

    Reading is the hot path, so no object is made per line there; indexing builds ``Record``s
    for sinks that want them, while the built-in sinks use the columns directly. Line ``i`` spans
    ``bounds[i]`` to ``bounds[i + 1]`` in the file.
    """

    __slots__ = ("bounds", "fields", "fingerprint", "lines", "path", "timestamps")

    def __init__(
        self,
        path: str,
        fingerprint: str,
        lines: list[str],
        bounds: list[int],
        timestamps: list[int],
        fields: list[Any] | None = None,
    ) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.lines = lines
        self.bounds = bounds
        self.timestamps = timestamps
        # None when no parser is configured; per line a dict, a Deferred (chunk_fields) or None
        self.fields = fields

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def end(self) -> int:
        return self.bounds[-1]

    @property
    def nbytes(self) -> int:
        """Bytes of the file this batch covers (what the byte-bounded queues count)."""
        return self.bounds[-1] - self.bounds[0]

    @property
    def key(self) -> str:
        """Idempotency key: the same lines re-sent after a restart get the same key."""
        return f"{self.fingerprint}:{self.bounds[0]}-{self.bounds[-1]}"

    def __len__(self) -> int:
        return len(self.lines)

    def field_map(self, index: int) -> dict[str, Any] | None:
        """Line ``index``'s fields as a dict (the column may hold a marker that stands for
        them: chunk_fields.Deferred)."""
        if self.fields is None:
            return None
        value = self.fields[index]
        if value is None or isinstance(value, dict):
            return value
        return value.fields(self.lines[index])

    def _record(self, index: int) -> Record:
        return Record(
            self.lines[index],
            self.field_map(index),
            self.path,
            self.fingerprint,
            self.bounds[index],
            self.bounds[index + 1],
            self.timestamps[index],
        )

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(len(self.lines)))]
        if index < 0:
            index += len(self.lines)
        if not 0 <= index < len(self.lines):
            raise IndexError("batch index out of range")
        return self._record(index)


class SinkError(Exception):
    """A batch was not delivered. ``retryable`` decides between backoff and drop;
    ``retry_after`` (seconds) is the destination's own hint (HTTP Retry-After), if any."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Sink(Protocol):
    name: str  # e.g. "loki", "http", "syslog", "relp", "stdout"; used as a metric label
    # True when the destination absorbs a batch sent again after a crash (Loki's identical
    # entries, an HTTP receiver honouring Idempotency-Key): acknowledgements are then written
    # to the state file every --checkpoint-interval. For any other sink (False, or missing)
    # each acknowledgement is made durable before the next batch is sent, so a crash repeats
    # at most the batch in flight.
    deduplicates: bool

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch``; return when acknowledged, raise SinkError otherwise."""
        ...

    async def close(self) -> None: ...


class PreparingSink(Sink, Protocol):
    """A sink whose ``send(batch)`` is ``deliver(await prepare(batch))``."""

    async def prepare(self, batch: Batch) -> Any:
        """Encode ``batch`` for the wire: no I/O, may run ahead of earlier deliveries; the
        result must hold all that ``deliver`` needs (the batch itself is released)."""
        ...

    async def deliver(self, prepared: Any) -> None:
        """Deliver a prepared batch (again after a failed attempt); return when acknowledged,
        raise SinkError otherwise."""
        ...
