"""Deterministic timestamps: the same line gets the same nanoseconds on every read.

Loki drops an entry identical to one it has (same stream, same timestamp, same line), so a
batch re-sent after a crash is absorbed only if its timestamps are reproduced exactly. Never the
time of reading, then:

- the line's own time: from its parsed fields ($msec, $time_iso8601, $time_local, ...), or,
  for a line that was not parsed, found in the text (an access log's ``[10/Oct/2000:13:55:36
  -0700]``, an error log's leading ``2000/10/10 13:55:36``);
- else the time of the nearest earlier line of the same file that had one (the *anchor*, which
  the checkpoint carries, so a re-read from the checkpoint starts from the same anchor); for the
  first lines of a file with no time at all, the file's discovery time (also checkpointed);
- plus a tie-breaker below the millisecond, ``offset % 1_000_000``: lines of the same second get
  distinct, file-ordered timestamps (identical requests in one second stay two entries), and
  $msec's milliseconds are kept.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from itertools import repeat
from typing import TYPE_CHECKING

from sidecars.runtime.nginx_log import parse_time_local, timestamp_ns

if TYPE_CHECKING:
    from sidecars.log_shipper.chunk_fields import LineTimes

TIE_BREAK = 1_000_000

_ACCESS_TIME = re.compile(r"\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]")
_ERROR_TIME = re.compile(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2}) ")


@lru_cache(maxsize=1024)
def _error_log_time(text: str) -> int | None:
    # nginx writes its error log in the server's local time zone, with no offset: the shipper
    # shares the Pod's TZ, so local time here is the same zone.
    try:
        seconds = time.mktime(time.strptime(text, "%Y/%m/%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None
    return int(seconds) * 1_000_000_000


_seen_times: dict[str, int | None] = {}  # "10/Oct/2000:13:55:36 -0700" -> ns: seconds repeat


def _time_local(text: str) -> int | None:
    """``$time_local`` text -> ns, cached (a pure function: caching keeps results identical)."""
    try:
        return _seen_times[text]
    except KeyError:
        pass
    try:
        known = parse_time_local(text)
    except ValueError:
        known = None
    if len(_seen_times) >= 256:  # lines come in time order: only a few recent seconds recur
        _seen_times.clear()
    _seen_times[text] = known
    return known


def time_in_text(line: str) -> int | None:
    # Fast path for the usual access-log shape: " [" + 26 characters + "]".
    start = line.find(" [", 0, 200)
    if start >= 0 and line[start + 28 : start + 29] == "]":
        known = _time_local(line[start + 2 : start + 28])
        if known is not None:
            return known
    match = _ACCESS_TIME.search(line, 0, 200)
    if match is not None:
        try:
            return parse_time_local(match.group(1))
        except ValueError:
            return None
    match = _ERROR_TIME.match(line)
    if match is not None:
        return _error_log_time(line[:19])
    return None


class Stamper:
    """Timestamps for one stream, in file order, continuing from ``anchor_ns``."""

    __slots__ = ("anchor_ns",)

    def __init__(self, anchor_ns: int) -> None:
        self.anchor_ns = anchor_ns

    def stamp(
        self,
        lines: list[str],
        fields: list[Mapping[str, str] | None] | None,
        bounds: list[int],
        times: LineTimes | None = None,
    ) -> list[int]:
        """``times``: the lines' time texts from a chunk parse (chunk_fields), which stand for
        the time fields of ``fields`` (then JSON texts, not dicts)."""
        if times is not None:
            if times.texts is None or times.parse is None:
                return self._stamp_text(lines, bounds)  # the format writes no time
            return self._stamp_times(lines, bounds, times.texts, times.parse)
        if fields is None:
            return self._stamp_text(lines, bounds)
        anchor = self.anchor_ns
        stamps = []
        append = stamps.append
        for index, line in enumerate(lines):
            own = timestamp_ns(fields[index])
            if own is None:
                own = time_in_text(line)
            if own is not None:
                anchor = own
            append(anchor + bounds[index] % TIE_BREAK)
        self.anchor_ns = anchor
        return stamps

    def _stamp_times(
        self, lines: list[str], bounds: list[int], texts: list[str], parse: Callable[[str], int]
    ) -> list[int]:
        """``stamp()`` for fields holding one time variable, given its text per line."""
        # Usually every line's time parses, and a chunk holds a few distinct seconds: parse
        # each once, then stamp every line by C-level maps (no Python code per line).
        known: dict[str, int] = {}
        for text in dict.fromkeys(texts):
            try:
                own = parse(text) if text else None
            except ValueError:
                own = None
            if own is None:  # a line without its own time: the loop below finds one
                break
            known[text] = own
        else:
            if texts:
                self.anchor_ns = known[texts[-1]]
                ties = map(operator.mod, bounds, repeat(TIE_BREAK))
                return list(map(operator.add, map(known.__getitem__, texts), ties))
        anchor = self.anchor_ns
        stamps: list[int] = []
        append = stamps.append
        same: str | None = None  # the last time text that parsed, and its time
        same_ns = 0
        for index, text in enumerate(texts):
            if text == same:
                anchor = same_ns
            else:
                own = None
                if text:
                    try:
                        own = parse(text)
                    except ValueError:
                        own = None
                if own is not None:
                    same, same_ns = text, own
                else:
                    own = time_in_text(lines[index])
                if own is not None:
                    anchor = own
            append(anchor + bounds[index] % TIE_BREAK)
        self.anchor_ns = anchor
        return stamps

    def _stamp_text(self, lines: list[str], bounds: list[int]) -> list[int]:
        """``time_in_text`` for each line, with the access-log shape inlined: consecutive lines
        of the same second share their " [...]" text, recognised by one comparison."""
        anchor = self.anchor_ns
        stamps: list[int] = []
        append = stamps.append
        same: str | None = None  # the last "<26 characters>]" that parsed, and its time
        same_ns = 0
        for line, offset in zip(lines, bounds, strict=False):
            start = line.find(" [", 0, 200)
            if start >= 0:
                text = line[start + 2 : start + 29]
                if text == same:
                    append(same_ns + offset % TIE_BREAK)
                    anchor = same_ns
                    continue
                own = _time_local(text[:26]) if text[26:] == "]" else None
                if own is not None:
                    same, same_ns = text, own
                else:
                    own = time_in_text(line)
            else:
                own = time_in_text(line)
            if own is not None:
                anchor = own
            append(anchor + offset % TIE_BREAK)
        self.anchor_ns = anchor
        return stamps


def anchor_of(stamp: int, offset: int) -> int:
    """The anchor in force for a line stamped ``stamp`` at ``offset``."""
    return stamp - offset % TIE_BREAK
