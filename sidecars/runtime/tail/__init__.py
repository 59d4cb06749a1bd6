"""Tailing machinery shared by the parts that read nginx's log files (log-shipper, metrics-proxy).

``Tailer(globs, positions=..., start_at="beginning"|"end")`` is an async iterator of ``Chunk``
(fingerprint, path, raw lines, their byte boundaries); see tailer.py for rotation, truncation and
deletion handling, identity.py for file identity and lines.py for line splitting.
"""

from sidecars.runtime.tail.identity import FINGERPRINT_MAX, fingerprint_of
from sidecars.runtime.tail.lines import Lines, LineSplitter, LongLines
from sidecars.runtime.tail.tailer import Chunk, FileView, StartAt, Tailer, TailStats

__all__ = [
    "FINGERPRINT_MAX",
    "Chunk",
    "FileView",
    "LineSplitter",
    "Lines",
    "LongLines",
    "StartAt",
    "TailStats",
    "Tailer",
    "fingerprint_of",
]
