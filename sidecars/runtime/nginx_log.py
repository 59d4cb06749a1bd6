"""nginx access-log lines into fields: any ``log_format`` compiled into one precompiled regex.

Pure logic, no I/O; shared by the log-shipper (fields of shipped records, deterministic
timestamps) and the metrics-proxy (status, method, timings).

What nginx writes, and so what the compiled regex relies on (checked against nginx 1.22):

- ``$name`` and ``${name}``; a name is ``[A-Za-z0-9_]+``. Everything else is literal text.
- escape=default: in a variable's value ``"``, ``\\``, bytes below 0x20 and from 0x7F up are
  written as ``\\xHH`` (upper-case hex); a variable that is not found is written as ``-``.
  A value can therefore never contain a raw ``"``, which makes quoted fields exact.
- escape=json: ``"`` and ``\\`` become ``\\"`` and ``\\\\``, control bytes ``\\n \\r \\t \\b
  \\f`` or ``\\u00XX``; other bytes are written as they are; a missing variable is empty.
- escape=none: values are written as they are; a missing variable is empty.
- The log module's own variables ($status, $time_local, $msec, $request_time, ...) are never
  escaped and have fixed shapes; they get exact patterns, which also anchors the generic ones.

A value without such a fixed shape that is followed by ambiguous text (a blank, a bracket)
takes the shortest length that lets the rest of the line match; on lines longer than
``LONG_LINE`` it ends at the first occurrence of that text, so a hostile line costs linear
time, not quadratic.

``parse()`` returns the values unescaped (``\\xC3\\xA9`` -> ``é``), missing ones as written
(``-`` or empty); the typed helpers at the bottom turn them into numbers or ``None``.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

ESCAPES = ("default", "json", "none")

# --- the format language --------------------------------------------------------------------

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class Literal:
    text: str


@dataclass(frozen=True, slots=True)
class Variable:
    name: str


def tokenize_format(fmt: str) -> list[Literal | Variable]:
    """Split a format into literals and variables, rejecting what nginx rejects at start-up."""
    parts: list[Literal | Variable] = []
    i, n = 0, len(fmt)
    while i < n:
        if fmt[i] != "$":
            j = fmt.find("$", i)
            j = n if j < 0 else j
            parts.append(Literal(fmt[i:j]))
            i = j
            continue
        start = i
        i += 1
        bracket = i < n and fmt[i] == "{"
        if bracket:
            i += 1
        j = i
        while j < n and fmt[j] in _NAME_CHARS:
            j += 1
        name = fmt[i:j]
        if bracket:
            if j >= n or fmt[j] != "}":
                raise ValueError(f"log format: missing '}}' after ${{{name} at column {start + 1}")
            j += 1
        if not name:
            raise ValueError(f"log format: '$' without a variable name at column {start + 1}")
        parts.append(Variable(name))
        i = j
    return parts


# --- value patterns ---------------------------------------------------------------------------

_TOKEN = r'[^\s"]+'  # values that never hold a blank or a quote: addresses, methods, protocols
_INT = r"\d+"
_SECONDS = r"\d+\.\d{3}"
_TIME_LOCAL = r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}"
_TIME_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:\d{2}|Z)"
# Upstream lists: ", " between servers of one upstream, " : " across internal redirects.
_UPSTREAM_SEP = r"(?:, | : )"
_UPSTREAM_TIMES = rf"(?:{_SECONDS}|-)(?:{_UPSTREAM_SEP}(?:{_SECONDS}|-))*"
_UPSTREAM_STATUSES = rf"(?:\d{{3}}|-)(?:{_UPSTREAM_SEP}(?:\d{{3}}|-))*"

_TYPED: dict[str, str] = {
    "status": r"\d{3}",
    "body_bytes_sent": _INT,
    "bytes_sent": _INT,
    "request_length": _INT,
    "connection": _INT,
    "connection_requests": _INT,
    "pid": _INT,
    "remote_port": _INT,
    "server_port": _INT,
    "request_time": _SECONDS,
    "msec": _SECONDS,
    "time_local": _TIME_LOCAL,
    "time_iso8601": _TIME_ISO,
    "pipe": r"[p.]",
    "upstream_response_time": _UPSTREAM_TIMES,
    "upstream_connect_time": _UPSTREAM_TIMES,
    "upstream_header_time": _UPSTREAM_TIMES,
    "upstream_status": _UPSTREAM_STATUSES,
    "request_id": r"[0-9a-f]{32}",
    "remote_addr": _TOKEN,
    "realip_remote_addr": _TOKEN,
    "server_addr": _TOKEN,
    "request_method": _TOKEN,
    "server_protocol": _TOKEN,
    "scheme": _TOKEN,
    "ssl_protocol": _TOKEN,
    "ssl_cipher": _TOKEN,
    "upstream_cache_status": _TOKEN,
}

# Characters a value may hold, per escape mode (see the module docstring).
_VALUE_CHAR = {"default": r'[^"]', "json": r'(?:[^"\\]|\\.)', "none": r"."}
_MISSING = {"default": "-", "json": "", "none": ""}


def _value_pattern(name: str, following: str, escape: str) -> str:
    """The regex for one variable's value, given the literal text that follows it."""
    typed = _TYPED.get(name)
    missing = re.escape(_MISSING[escape])
    if typed is not None:
        return f"(?:{typed}|{missing})"
    char = _VALUE_CHAR[escape]
    if escape != "none" and (following == "" or following.startswith('"')):
        # Exact: the value cannot contain a raw quote, so it ends right before one (or at the
        # end of the line). Possessive, so a line that does not match fails in linear time.
        return f"{char}*+"
    if following == "" and escape == "none":
        return ".*"
    # Ambiguous (a blank, a bracket, another variable): the shortest value that lets the rest
    # of the line match.
    return f"{char}*?"


def _patterns(
    parts: list[Literal | Variable],
    escape: str,
    capture: frozenset[str] | None = None,
    one_line: bool = False,
) -> tuple[str, str, tuple[str, ...]]:
    """The regex of a tokenized format, and its linear-time form for long lines (see
    ``LogFormatParser.parse``), with the names of its groups.

    ``capture``: only these variables get a group (None: all); the others are matched the same
    way without one, so a scan for a few fields finds exactly what the full regex finds.
    ``one_line``: values cannot hold a newline, so the regex can run over many lines at once
    (``re.MULTILINE``, anchored with ``^...$``) and match each line as ``fullmatch`` would.
    """
    pieces: list[str] = []
    # The same, with every ambiguous value ending at the *first* occurrence of the literal
    # after it (an atomic group): linear time, used for long lines (see parse()).
    guarded: list[str] = []
    names: list[str] = []
    seen: set[str] = set()
    consumed = -1
    for index, part in enumerate(parts):
        if isinstance(part, Literal):
            pieces.append(re.escape(part.text))
            if index != consumed:
                guarded.append(re.escape(part.text))
            continue
        following = parts[index + 1] if index + 1 < len(parts) else None
        text_after = following.text if isinstance(following, Literal) else ""
        if following is not None and not isinstance(following, Literal):
            text_after = "$"  # another variable follows: never "exact"
        value = _value_pattern(part.name, text_after, escape)
        if one_line:
            value = _ONE_LINE.get(value, value)
        if part.name in seen or (capture is not None and part.name not in capture):
            group = f"(?:{value})"  # a repeated variable keeps the first value
        else:
            names.append(part.name)
            group = f"({value})"
        seen.add(part.name)
        pieces.append(group)
        if value.endswith("*?") and isinstance(following, Literal):
            guarded.append(f"(?>{group}{re.escape(following.text)})")
            consumed = index + 1
        else:
            guarded.append(group)
    return "".join(pieces), "".join(guarded), tuple(names)


# The generic value patterns without a newline (the typed ones never hold one).
_ONE_LINE_CHAR = {
    _VALUE_CHAR["default"]: r'[^"\n]',
    _VALUE_CHAR["json"]: r'(?:[^"\\\n]|\\[^\n])',
    _VALUE_CHAR["none"]: r"[^\n]",
}
_ONE_LINE = {
    char + rep: one + rep for char, one in _ONE_LINE_CHAR.items() for rep in ("*+", "*?")
}
_ONE_LINE[".*"] = r"[^\n]*"


# --- parsers --------------------------------------------------------------------------------

LONG_LINE = 4096  # characters; see LogFormatParser.parse


class LogFormatParser:
    """A compiled ``log_format``: ``parse(line)`` -> {variable: value}, or None if no match."""

    __slots__ = (
        "_fullmatch",
        "_fullmatch_long",
        "_names",
        "_parts",
        "_unescape",
        "escape",
        "fields",
        "format",
        "regex",
    )

    def __init__(self, fmt: str, *, escape: str = "default") -> None:
        if escape not in ESCAPES:
            raise ValueError(f"log format: escape={escape!r} is not one of {', '.join(ESCAPES)}")
        if not fmt:
            raise ValueError("log format: empty format")
        parts = tokenize_format(fmt)
        pattern, guarded, names = _patterns(parts, escape)
        self.format = fmt
        self.escape = escape
        self.fields: tuple[str, ...] = tuple(names)
        self.regex = re.compile(pattern, re.DOTALL)
        self._fullmatch = self.regex.fullmatch
        self._fullmatch_long = re.compile(guarded, re.DOTALL).fullmatch
        self._parts: tuple[Literal | Variable, ...] | None = tuple(parts)
        self._names = self.fields
        self._unescape: Callable[[str], str] | None = {
            "default": unescape_default,
            "json": unescape_json,
            "none": None,
        }[escape]

    def parse(self, line: str) -> dict[str, str] | None:
        # Backtracking over several ambiguous values costs O(n^2) or worse on a hostile line;
        # past LONG_LINE characters each such value ends at the first occurrence of the text
        # that follows it instead (a value containing that text then does not parse).
        match = (self._fullmatch if len(line) <= LONG_LINE else self._fullmatch_long)(line)
        if match is None:
            return None
        fields = dict(zip(self._names, match.groups(), strict=True))
        # Fast path: without a backslash in the line no value can hold an escape sequence.
        if self._unescape is not None and "\\" in line:
            unescape = self._unescape
            for name, value in fields.items():
                if "\\" in value:
                    fields[name] = unescape(value)
        return fields

    @property
    def unescape(self) -> Callable[[str], str] | None:
        """What undoes this format's escaping in a value (None for escape=none)."""
        return self._unescape

    def patterns(
        self, capture: frozenset[str] | None = None, *, one_line: bool = False
    ) -> tuple[str, str, tuple[str, ...]] | None:
        """This format's regex and long-line regex with groups for ``capture`` only, and the
        names of those groups, in order (see ``_patterns``); None for JSON lines."""
        if self._parts is None:
            return None
        return _patterns(list(self._parts), self.escape, capture, one_line)

    def __repr__(self) -> str:
        return f"LogFormatParser({self.format!r}, escape={self.escape!r})"


class JsonLineParser(LogFormatParser):
    """A line that is one JSON object -> its members as strings; anything else -> None.

    Numbers keep their exact text (``0.100`` stays ``"0.100"``), ``true``/``false`` become
    those words, ``null`` becomes ``""`` (what nginx's escape=json writes for a missing
    variable), nested objects and arrays their compact JSON text.
    """

    __slots__ = ()

    def __init__(self) -> None:
        self.format = "<one JSON object per line>"
        self.escape = "json"
        self.fields = ()
        self.regex = re.compile(r"\{.*\}", re.DOTALL)
        self._fullmatch = self._fullmatch_long = self.regex.fullmatch
        self._names = ()
        self._unescape = None
        self._parts = None

    def parse(self, line: str) -> dict[str, str] | None:
        text = line.strip()
        if not text.startswith("{"):
            return None
        try:
            value = _JSON_DECODER.decode(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict):
            return None
        fields = {key: _json_text(item) for key, item in value.items()}
        nested = [key for key, item in value.items() if isinstance(item, dict | list)]
        if nested:
            # Numbers inside them were kept as strings above; re-read them as numbers.
            try:
                plain = json.loads(text)
            except (ValueError, RecursionError):
                plain = value
            for key in nested:
                fields[key] = _json_text(plain[key])
        if "\\u" in text:  # a "\ud800" escape decodes to a lone surrogate, unencodable later
            fields = {_no_surrogates(k): _no_surrogates(v) for k, v in fields.items()}
        return fields

    def __repr__(self) -> str:
        return "JsonLineParser()"


# parse_int/parse_float/parse_constant=str keep numbers as written and avoid int() limits.
_JSON_DECODER = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _no_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def compile_log_format(fmt: str, *, escape: str = "default") -> LogFormatParser:
    """Compile a format string such as ``$remote_addr [$time_local] "$request"``.

    Raises ValueError (one line, naming the problem) for what nginx itself would reject.
    """
    return LogFormatParser(fmt, escape=escape)


# --- unescaping -----------------------------------------------------------------------------

_HEX_RUN = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+")


def _hex_run(match: re.Match[str]) -> str:
    # A run of \xHH is one byte string: UTF-8 split over several escapes decodes whole.
    return bytes.fromhex(match.group(0).replace("\\x", "")).decode("utf-8", "replace")


def unescape_default(value: str) -> str:
    """Undo escape=default: ``\\xHH`` sequences back to the text they encoded."""
    return _HEX_RUN.sub(_hex_run, value)


_JSON_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|(["\\/bfnrt]))')
_JSON_SIMPLE = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _json_escape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code is None:
        return _JSON_SIMPLE[match.group(2)]
    point = int(code, 16)
    return "\ufffd" if 0xD800 <= point <= 0xDFFF else chr(point)


def unescape_json(value: str) -> str:
    """Undo escape=json (``\\"``, ``\\\\``, ``\\n``, ``\\u00XX``, ...); unknown escapes stay."""
    return _JSON_ESCAPE.sub(_json_escape, value)


# --- the log_format directive as written in nginx.conf ------------------------------------------


@dataclass(frozen=True)
class LogFormatDirective:
    name: str
    escape: str
    format: str


_CONF_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_BLANK_OR_COMMENTS = re.compile(r"(?:\s|#[^\n]*)*")


def _conf_words(text: str) -> list[str]:
    """nginx.conf's tokenizer for one directive: quoted or bare words, ``#`` comments, ``;``."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch == ";":
            if not _BLANK_OR_COMMENTS.fullmatch(text, i + 1):
                raise ValueError("log_format: text after the terminating ';'")
            return words
        else:
            quote = ch if ch in "'\"" else None
            i += 1 if quote else 0
            out: list[str] = []
            while True:
                if i >= n:
                    if quote:
                        raise ValueError(f"log_format: unterminated {quote} string")
                    break
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    out.append(_CONF_ESCAPES.get(nxt, "\\" + nxt))
                    i += 2
                    continue
                if quote and ch == quote:
                    i += 1
                    break
                if not quote and (ch.isspace() or ch in ";#"):
                    break
                out.append(ch)
                i += 1
            words.append("".join(out))
    return words


def parse_log_format_directive(text: str) -> LogFormatDirective:
    """``log_format name [escape=default|json|none] 'part' "part" ...;`` as in nginx.conf.

    The string arguments are joined with nothing between them, as nginx does.
    """
    words = _conf_words(text)
    if not words or words[0] != "log_format":
        raise ValueError("log_format: expected text starting with 'log_format'")
    if len(words) < 3:
        raise ValueError("log_format: expected a name and at least one format string")
    name, rest = words[1], words[2:]
    escape = "default"
    if rest[0].startswith("escape="):
        escape = rest[0].removeprefix("escape=")
        if escape not in ESCAPES:
            raise ValueError(f"log_format: escape={escape!r} is not one of {', '.join(ESCAPES)}")
        rest = rest[1:]
    if not rest:
        raise ValueError("log_format: no format string after escape=")
    return LogFormatDirective(name=name, escape=escape, format="".join(rest))


# --- presets --------------------------------------------------------------------------------

# nginx's built-in "combined" (ngx_http_log_module.c).
COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
# apps/nginx/nginx.conf's "log_format sidecars" (a unit test keeps the two identical).
SIDECARS = (
    '$remote_addr - $remote_user [$time_local] "$request" '
    '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
    '$request_time "$upstream_response_time"'
)

PRESETS: Mapping[str, LogFormatParser] = {
    "combined": compile_log_format(COMBINED),
    "json": JsonLineParser(),
    "sidecars": compile_log_format(SIDECARS),
}


def load_log_format(value: str) -> LogFormatParser:
    """A setting's value -> parser: a preset name, a whole ``log_format ...;`` directive copied
    from nginx.conf (its escape= honoured), or the format text itself (escape=default)."""
    text = value.strip()
    if text in PRESETS:
        return PRESETS[text]
    if text.startswith("log_format") and (len(text) == 10 or text[10].isspace()):
        directive = parse_log_format_directive(text)
        return compile_log_format(directive.format, escape=directive.escape)
    if "$" not in text:
        raise ValueError(
            f"log format {text!r} is neither a preset ({', '.join(PRESETS)}) "
            "nor a format with $variables"
        )
    return compile_log_format(value)


# --- time -----------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_TIME_LOCAL_RE = re.compile(
    r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_NS = 1_000_000_000


@lru_cache(maxsize=4096)  # a busy log repeats each second's text many times
def parse_time_local(text: str) -> int:
    """``10/Oct/2000:13:55:36 -0700`` -> nanoseconds since the epoch (UTC)."""
    match = _TIME_LOCAL_RE.fullmatch(text)
    if match is None or match.group(2) not in _MONTHS:
        raise ValueError(f"not an nginx $time_local: {text!r}")
    day, mon, year, hour, minute, sec, sign, off_h, off_m = match.groups()
    try:
        local = datetime(int(year), _MONTHS[mon], int(day), int(hour), int(minute), int(sec))
    except ValueError as exc:
        raise ValueError(f"not an nginx $time_local: {text!r} ({exc})") from None
    offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    return (calendar.timegm(local.timetuple()) - offset) * _NS


@lru_cache(maxsize=4096)
def parse_time_iso8601(text: str) -> int:
    """``2000-10-10T13:55:36-07:00`` (or ``...Z``) -> nanoseconds since the epoch (UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"ISO 8601 time without a UTC offset: {text!r}")
    seconds = calendar.timegm(moment.utctimetuple())
    return seconds * _NS + moment.microsecond * 1000


_MSEC_RE = re.compile(r"(\d+)(?:\.(\d{1,9}))?")


def parse_msec(text: str) -> int:
    """``$msec`` (``1700000000.123``) -> nanoseconds, exactly (no float rounding)."""
    match = _MSEC_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an nginx $msec: {text!r}")
    whole, frac = match.groups()
    return int(whole) * _NS + int((frac or "").ljust(9, "0"))


# Most precise first; JSON formats often log $time_iso8601 as "@timestamp".
TIME_FIELDS: tuple[tuple[str, Callable[[str], int]], ...] = (
    ("msec", parse_msec),
    ("time_iso8601", parse_time_iso8601),
    ("time_local", parse_time_local),
    ("@timestamp", parse_time_iso8601),
    ("timestamp", parse_time_iso8601),
)


def timestamp_ns(fields: Mapping[str, str] | None) -> int | None:
    """The line's own time from its parsed fields (None when it carries none that parses).

    ``$time_local`` has one-second resolution: a shipper that needs distinct, repeatable
    timestamps adds a stable tie-breaker (e.g. the line's offset) below the second.
    """
    if not fields:
        return None
    for name, parse in TIME_FIELDS:
        text = fields.get(name)
        if text:
            try:
                return parse(text)
            except ValueError:
                continue
    return None


# --- typed field helpers (for the metrics-proxy) -----------------------------------------------


def int_of(text: str | None) -> int | None:
    """A value's decimal digits as an int; None when absent or anything else."""
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def status(fields: Mapping[str, str]) -> int | None:
    """``$status`` as an int; None when absent or not a 3-digit number."""
    text = fields.get("status")
    return int_of(text) if text is not None and len(text) == 3 else None


def method(fields: Mapping[str, str]) -> str | None:
    """``$request_method``, else the first word of ``$request``; None when neither is there.

    Not normalised: the caller folds unknown methods (a garbage request line is logged too).
    """
    return method_of(fields.get("request_method"), fields.get("request"))


def method_of(request_method: str | None, request: str | None) -> str | None:
    """``method()`` from the two values (None: not in the format)."""
    if request_method and request_method != "-":
        return request_method
    if not request or request == "-":
        return None
    word = request.split(" ", 1)[0]
    return word or None


def body_bytes_sent(fields: Mapping[str, str]) -> int | None:
    return int_of(fields.get("body_bytes_sent"))


_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")


def seconds_of(text: str | None) -> float | None:
    """A value's seconds (``0.012``) as a float; None when absent or malformed."""
    if text is None or _SECONDS_RE.fullmatch(text) is None:
        return None
    return float(text)


def request_time(fields: Mapping[str, str]) -> float | None:
    """``$request_time`` in seconds; None when absent or malformed."""
    return seconds_of(fields.get("request_time"))


_LIST_SEP = re.compile(r"\s*[,:]\s*")


def upstream_response_times(fields: Mapping[str, str]) -> list[float]:
    """Every numeric entry of ``$upstream_response_time`` ("0.1, 0.2 : 0.3"); ``-`` skipped."""
    return upstream_times_of(fields.get("upstream_response_time"))


def upstream_times_of(text: str | None) -> list[float]:
    """``upstream_response_times()`` of the value itself."""
    if not text or text == "-":
        return []
    values = (seconds_of(item) for item in _LIST_SEP.split(text.strip()))
    return [v for v in values if v is not None]


def upstream_response_time(fields: Mapping[str, str]) -> float | None:
    """Total seconds spent on upstreams for the request (the sum over every server tried);
    None when no upstream was involved."""
    values = upstream_response_times(fields)
    return sum(values) if values else None
