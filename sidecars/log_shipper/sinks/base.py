"""The contract between the log-shipper pipeline and its sinks.

A sink receives batches of records and returns only once the destination has acknowledged
them; offsets are checkpointed only after every sink has returned. Failures are classified so
the pipeline knows whether to retry (connection errors, 429, 5xx) or drop with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Record:
    line: str  # the log line without its newline; invalid UTF-8 replaced, never raised
    fields: dict[str, Any] | None  # parsed fields, or None when the line did not parse
    path: str  # the file it came from
    fingerprint: str  # identity of that file (survives renames; differs for a reused inode)
    offset: int  # byte offset of the line's start in that file
    end: int  # byte offset just after the line (the checkpoint once acknowledged)
    timestamp_ns: int  # deterministic: same line, same value, also when re-read after a crash


class SinkError(Exception):
    """A batch was not delivered. ``retryable`` decides between backoff and drop."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Sink(Protocol):
    name: str  # e.g. "loki", "http", "syslog", "relp", "stdout"; used as a metric label

    async def start(self) -> None: ...

    async def send(self, batch: Sequence[Record]) -> None:
        """Deliver ``batch``; return when acknowledged, raise SinkError otherwise."""
        ...

    async def close(self) -> None: ...
