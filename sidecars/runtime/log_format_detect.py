"""Which log format a file is written in, told from its first lines (pure logic, no I/O).

A stock nginx writes ``combined``; this project's nginx.conf writes ``sidecars`` (combined plus
two timings); ``escape=json`` formats write one JSON object per line. With no format set, the
log-shipper and the metrics-proxy take the first of these that parses the first lines of a
file, instead of counting every line of a stock log as "unparsed".

The presets exclude each other: a ``sidecars`` line has text after combined's last quoted field
(combined's regex ends there), a ``combined`` line lacks the two timings, and neither starts
with ``{``. So the first line any of them parses decides; lines that parse with none of them
(a custom ``log_format``) leave the file undecided, and after ``SAMPLE_LINES`` such lines the
detection gives up: the caller logs which setting names the format.

nginx's error log (``2026/12/01 08:00:00 [notice] 12#12: ...``) is recognised as what it is,
so a shipper tailing ``error.log`` beside ``access.log`` ships it raw without a warning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sidecars.runtime.nginx_log import PRESETS, LogFormatParser

AUTO = "auto"
# Most specific first (ties cannot happen between these, see above; the order is a safeguard).
CANDIDATES = ("sidecars", "combined", "json")
ERROR_LOG = "nginx-error-log"
SAMPLE_LINES = 20  # lines looked at before giving up on a file
SAMPLE_CHARS = 200  # a logged sample line is cut to this

_ERROR_LOG_LINE = re.compile(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[[a-z]+\] \d+#\d+: ")


def detect_line(line: str) -> str | None:
    """The format of one line: a preset name, ERROR_LOG, or None."""
    if _ERROR_LOG_LINE.match(line):
        return ERROR_LOG
    for name in CANDIDATES:
        if PRESETS[name].parse(line) is not None:
            return name
    return None


def detect(lines: Sequence[str]) -> str | None:
    """The format of the first line among ``lines`` that has a known one (None: none has)."""
    for line in lines:
        found = detect_line(line)
        if found is not None:
            return found
    return None


def sample(line: str) -> str:
    """A line as quoted in a log message: cut to SAMPLE_CHARS."""
    return line if len(line) <= SAMPLE_CHARS else line[:SAMPLE_CHARS] + "..."


@dataclass
class Detection:
    """One file's detection, fed the lines as they are read.

    ``format`` is None while undecided, then a preset name or ERROR_LOG; ``gave_up`` once
    SAMPLE_LINES lines matched nothing (the file stays unparsed). ``parser`` is the preset's
    parser (None for the error log and while undecided)."""

    format: str | None = None
    parser: LogFormatParser | None = None
    looked_at: int = 0
    gave_up: bool = False
    first_line: str = ""

    @property
    def settled(self) -> bool:
        return self.format is not None or self.gave_up

    def feed(self, lines: Sequence[str]) -> bool:
        """Look at (the first of) ``lines``; True when this call settled the detection."""
        if self.settled or not lines:
            return False
        if not self.first_line:
            self.first_line = lines[0]
        room = SAMPLE_LINES - self.looked_at
        found = detect(lines[:room])
        self.looked_at += min(room, len(lines))
        if found is not None:
            self.format = found
            self.parser = PRESETS.get(found)
            return True
        if self.looked_at >= SAMPLE_LINES:
            self.gave_up = True
            return True
        return False
