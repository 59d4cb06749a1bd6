"""A chunk of lines through one compiled ``log_format`` in one regex pass (pure logic).

Parsing line by line (a match, a dict, unescaping) and then encoding each dict with the json
module cost about 12 us per nginx line, four times the rest of the shipper's work. Here the
format's regex runs over the whole chunk at once (``findall`` over the lines joined by
newlines, each line anchored by ``^...$``), and each line's fields become their JSON object
text by one ``%`` formatting call per line, mapped in C. What the NDJSON encoder then writes is
byte for byte what it wrote from the dicts (tests/unit/log_shipper/test_chunk_fields.py checks it
against the per-line path).

Reading only needs each line's time and whether it matched; the fields themselves only a sink
that writes them (HTTP, stdout; not Loki, not syslog without structured data). So reading
stores a ``Deferred`` marker per line (one shared object: no memory per line), and the
encoder runs the same pass again over the lines of the piece it writes (``Deferred.json``).
Holding every line's fields as text from reading to sending cost about 6 MiB of peak RSS
draining a backlog, for 1.4 us per line saved.

The shortcut holds only where a value's text is already its JSON string content, and the chunk
takes the per-line path otherwise:

- the chunk holds no control character (JSON escapes them; nginx never writes one raw);
- no line is longer than ``LONG_LINE`` (those match with the linear-time regex instead);
- every line matches (else the unparsed ones must be found, counted and reported);
- a line holding a backslash may carry an escape sequence to decode: that line alone goes
  through the per-line parser (its fields are then a dict, which the encoder dumps);
- escape=none and JSON-lines formats always take the per-line path (a value may hold a quote).

The line's time comes out of the same pass: the text of the format's one time variable
(``$msec``, ``$time_iso8601`` or ``$time_local``) per line, for the stamper.

For ASCII pieces (what nginx's escape=default writes) the encoder gets whole records' line and
fields as bytes from one pass (``tails``), and the chunk regexes let quoted values run past a
newline, which sre scans much faster (``_across_lines``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from sidecars.runtime.nginx_log import LONG_LINE, TIME_FIELDS, LogFormatParser

_CONTROL = [chr(code) for code in range(32) if code != 0x0A]  # newline joins the lines
_TIME_PARSE = dict(TIME_FIELDS)


class LineTimes(NamedTuple):
    """Each line's time text (empty: none) and how it becomes nanoseconds (which raises
    ValueError for text that is not a time); ``texts`` None: the format writes no time."""

    parse: Callable[[str], int] | None
    texts: list[str] | None


NO_TIME = LineTimes(None, None)


class Deferred:
    """Stands for a line's fields in a batch: ``parser``'s fields of the line's own text, a line
    that the chunk pass matched and that holds no backslash (so nothing to unescape)."""

    __slots__ = ("_chunk_parser",)

    def __init__(self, chunk_parser: ChunkParser) -> None:
        self._chunk_parser = chunk_parser

    @property
    def parser(self) -> LogFormatParser:
        return self._chunk_parser.parser

    def json(self, lines: list[str]) -> list[str]:
        """The JSON object text of each line's fields (lines this marker stands for)."""
        return self._chunk_parser.json(lines)

    def json_utf8(self, lines: list[str], joined: bytes) -> list[bytes]:
        """``json(lines)`` as UTF-8; ``joined``: ``"\\n".join(lines)`` as UTF-8."""
        return self._chunk_parser.json_utf8(lines, joined)

    def tails(self, lines: list[str], joined: bytes) -> tuple[list[bytes], list[bytes]] | None:
        """``ChunkParser.tails``."""
        return self._chunk_parser.tails(lines, joined)

    def fields(self, line: str) -> dict[str, str] | None:
        return self._chunk_parser.parser.parse(line)


class ChunkParser:
    __slots__ = (
        "_findall", "_findall_ascii", "_has_time", "_scan", "_scan_ascii", "_tail",
        "_template", "_template_ascii", "_time_parse", "deferred", "parser",
    )  # fmt: skip

    def __init__(self, parser: LogFormatParser) -> None:
        self.parser = parser
        self._findall: Callable[[str], list[Any]] | None = None
        self._findall_ascii: Callable[[bytes], list[Any]] | None = None
        self._template = ""
        self._template_ascii = b""
        self._tail: bytes | None = None
        self._scan: Callable[[str], list[str]] | None = None
        self._scan_ascii: Callable[[str], list[str]] | None = None
        self._has_time = False
        self._time_parse: Callable[[str], int] | None = None
        self.deferred = Deferred(self)
        compiled = None if parser.escape == "none" else parser.patterns(one_line=True)
        if compiled is None or "\n" in parser.format:
            return
        pattern, _, names = compiled
        times = [name for name in _TIME_PARSE if name in names]
        if len(names) < 2 or len(times) > 1:  # findall's rows are tuples from two groups on
            return
        full = f"^(?:{_across_lines(pattern)})$"
        self._findall = re.compile(full, re.MULTILINE).findall
        # Variable names are [A-Za-z0-9_]+: nothing in them to escape for JSON or for %.
        self._template = "{" + ",".join(f'"{name}":"%s"' for name in names) + "}"
        # Reading needs only the time and whether each line matches: the same regex with one
        # group (the time's, else any) is a quarter cheaper, and findall gives plain strings.
        scan = parser.patterns(frozenset(times[:1] or names[:1]), one_line=True)
        assert scan is not None
        scan_text = f"^(?:{_across_lines(scan[0])})$"
        self._scan = re.compile(scan_text, re.MULTILINE).findall
        # ASCII text (nginx's escape=default writes every byte >= 0x7f as \xHH) matches the
        # same under re.ASCII, where \d and \s are table lookups instead of Unicode category
        # calls (about a tenth faster). Only whitespace \x1c-\x1f differs, controls that send
        # a chunk down the per-line path anyway. Encoding runs the full regex over the UTF-8
        # bytes it writes, so the fields come out as bytes without a round trip through str.
        self._scan_ascii = re.compile(scan_text, re.MULTILINE | re.ASCII).findall
        if full.isascii():
            self._findall_ascii = re.compile(full.encode(), re.MULTILINE).findall
            self._template_ascii = self._template.encode()
            self._tail = b'","fields":' + self._template_ascii + b"}\n"
        if times:
            self._has_time = True
            self._time_parse = _TIME_PARSE[times[0]]

    def parse(self, texts: list[str]) -> tuple[list[Any], LineTimes | None]:
        """Per line: ``self.deferred``, a dict (parsed line by line), or None (it did not
        match); and the lines' times (None: take them from the fields, line by line)."""
        fast = self._fast(texts) if self._scan is not None and texts else None
        if fast is not None:
            return fast
        parse = self.parser.parse
        return [parse(text) for text in texts], None

    def _fast(self, texts: list[str]) -> tuple[list[Any], LineTimes] | None:
        if max(map(len, texts)) > LONG_LINE:
            return None
        joined = "\n".join(texts)
        if any(control in joined for control in _CONTROL):
            return None
        scan = self._scan_ascii if joined.isascii() else self._scan
        found = scan(joined)  # type: ignore[misc]
        if len(found) != len(texts):  # a line did not match (each match is exactly one line)
            return None
        fields: list[Any] = [self.deferred] * len(found)
        if "\\" in joined:
            parse = self.parser.parse
            for index, text in enumerate(texts):
                if "\\" in text:
                    fields[index] = parse(text)
        if not self._has_time:
            return fields, NO_TIME
        # Time variables have fixed shapes without a backslash: the match is the value.
        return fields, LineTimes(self._time_parse, found)

    def json(self, lines: list[str]) -> list[str]:
        """The fields of lines that ``parse`` deferred, as JSON object texts."""
        rows = self._findall("\n".join(lines)) if self._findall is not None else []
        if len(rows) != len(lines):  # not lines this parser deferred: the careful way
            return [_dumps(self.parser.parse(line)) for line in lines]
        return list(map(self._template.__mod__, rows))

    def tails(self, lines: list[str], joined: bytes) -> tuple[list[bytes], list[bytes]] | None:
        """The lines as JSON string contents, and per line the rest of its NDJSON record
        from the line's closing quote: ``","fields":{...}}`` and the newline (what encode.py
        writes for them); None where this shortcut does not hold. ``joined``: the lines
        (deferred by this parser) joined by newlines, as UTF-8.

        Deferred lines hold no control character; without a backslash either, a quote is the
        only thing to escape in a line, and a value (which holds no quote) has nothing to
        escape at all."""
        if self._tail is None or not joined.isascii() or b"\\" in joined:
            return None
        rows = self._findall_ascii(joined)  # type: ignore[misc]
        escaped = joined.replace(b'"', b'\\"').split(b"\n")
        if len(rows) != len(lines) or len(escaped) != len(lines):
            return None
        return escaped, list(map(self._tail.__mod__, rows))

    def json_utf8(self, lines: list[str], joined: bytes) -> list[bytes]:
        """``json(lines)`` as UTF-8, given ``joined``: the lines joined by newlines, as UTF-8."""
        if self._findall_ascii is not None and joined.isascii():
            rows = self._findall_ascii(joined)
            if len(rows) == len(lines):
                return list(map(self._template_ascii.__mod__, rows))
        # Compact JSON never holds a raw newline: one join/split makes it all bytes at once.
        return _utf8("\n".join(self.json(lines))).split(b"\n")


# A quoted value of escape=default: "[^"\n]*+" checks two characters at each step; "[^"]*+"
# runs sre's one-character loop, which halves the time of the whole regex.
_QUOTED_VALUE = '[^"\\n]*+'


def _across_lines(pattern: str) -> str:
    """``pattern`` (a one-line regex) with its quoted values free to run past a newline.

    Over lines joined by newlines this finds the same matches, and only where it matters: a
    value that ran into the next line makes a match that spans two lines, so fewer matches
    than lines, and every caller then takes the per-line path. When there are as many
    matches as lines, each match is one line and took the same path through the regex as
    the strict one (a possessive run ends at the same quote within the line). A run ends
    at the next quote, so a hostile chunk costs no more than it did (linear). Lazy values
    (``*?``) keep the newline out: they would retry the rest of the regex at every step."""
    return pattern.replace(_QUOTED_VALUE, '[^"]*+')


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _dumps(fields: dict[str, str] | None) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
