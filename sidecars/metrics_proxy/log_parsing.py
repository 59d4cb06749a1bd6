"""The access log's lines into counted responses: through the configured format, or through
the one detected from the first lines (``--log-format auto``, the default, so a stock nginx's
``combined`` log is counted too).

Lines that do not parse are counted (``metrics_proxy_access_log_lines_total{result="unparsed"}``)
and the first one is logged with a sample and the setting that fixes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from operator import itemgetter

from sidecars.metrics_proxy.access_log import COUNT_ORDER, NEEDED, AccessLogMetrics
from sidecars.runtime import nginx_log
from sidecars.runtime.log_format_detect import AUTO, Detection, sample
from sidecars.runtime.logs import kv
from sidecars.runtime.nginx_log import LONG_LINE, LogFormatParser, load_log_format

log = logging.getLogger("sidecars.metrics_proxy")

FIX = "set METRICS_PROXY_LOG_FORMAT (--log-format) to the access log's nginx log_format"
NOT_COUNTED = (
    "access-log lines do not match the log format (or have no status); counted as unparsed"
)
# Until the format is known only the families every format has are served.
_UNDECIDED = frozenset({"status"})


class AccessLogParsing:
    def __init__(self, log_format: str, access: AccessLogMetrics) -> None:
        self.access = access
        self.detection: Detection | None = None
        self.parser: LogFormatParser | None = None
        self._scan: Scan | None = None
        self._warned = False
        if log_format == AUTO:
            self.detection = Detection()
            access.logged = _UNDECIDED
        else:
            self._use(load_log_format(log_format))

    def _use(self, parser: LogFormatParser) -> None:
        self.parser = parser
        self._scan = Scan.of(parser)
        # A JSON-lines parser knows its fields only line by line.
        self.access.logged = frozenset(parser.fields) if parser.fields else None

    def feed(self, texts: list[str]) -> None:
        detection = self.detection
        if detection is not None and not detection.settled and detection.feed(texts):
            if detection.parser is not None:
                self._use(detection.parser)
                log.info("access log format detected", extra=kv(format=detection.format))
            else:
                self._warn(
                    "no known log format (combined, sidecars, json) in the access log's first "
                    "lines; its lines are counted as unparsed",
                    detection.first_line,
                )
        parser = self.parser
        observe = self.access.observe
        if parser is None:
            for _ in texts:
                observe(None)
            return
        if self._scan is not None:
            counted = self._scan.feed(texts, self.access.count)
            if counted is not None:
                if counted < len(texts) and not self._warned:
                    self._warn(NOT_COUNTED, texts[counted])
                return
        parse = parser.parse
        for text in texts:
            fields = parse(text)
            if not observe(fields) and not self._warned:
                self._warn(NOT_COUNTED, text)

    def _warn(self, message: str, line: str) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            message + " (logged once)",
            extra=kv(
                sample=sample(line),
                format=getattr(self.parser, "format", None) if self.parser else None,
                fix=FIX,
            ),
        )


# count()'s arguments, with the two the method comes from in its place.
_ORDER = COUNT_ORDER


class Scan:
    """The few fields the metrics need (``access_log.NEEDED``), for a whole chunk in one regex
    pass: the format's regex with groups for those fields only, over the lines joined by
    newlines (``^...$`` per line), instead of a match and a dict of every field per line.
    Finds exactly what ``parser.parse`` finds (test_log_parsing.py checks it)."""

    __slots__ = ("_findall", "_pick", "_unescape")

    def __init__(self, findall: Callable[[str], list[tuple[str, ...]]], names: tuple[str, ...],
                 unescape: Callable[[str], str] | None) -> None:  # fmt: skip
        self._findall = findall
        # count()'s values from a row (a field not in the format: None, from a row's end).
        at = [names.index(n) if n in names else len(names) for n in _ORDER]
        getter = itemgetter(*at)
        self._pick: Callable[[tuple[str, ...]], tuple[str | None, ...]] = lambda row: getter(
            (*row, None)
        )
        self._unescape = unescape

    @classmethod
    def of(cls, parser: LogFormatParser) -> Scan | None:
        compiled = parser.patterns(NEEDED & frozenset(parser.fields), one_line=True)
        if compiled is None or "\n" in parser.format or len(compiled[2]) < 2:
            return None  # JSON lines; or findall would give strings, not rows
        pattern, _, names = compiled
        findall = re.compile(f"^(?:{pattern})$", re.MULTILINE).findall
        return cls(findall, names, parser.unescape)

    def feed(self, texts: list[str], count: Callable[..., bool]) -> int | None:
        """Count ``texts`` (``count``: AccessLogMetrics.count); the index of the first line it
        could not count (len: none), or None (nothing counted) when a line is too long or
        does not match: the caller then takes them line by line and reports the first that
        failed."""
        if not texts or max(map(len, texts)) > LONG_LINE:
            return None
        joined = "\n".join(texts)
        rows = self._findall(joined)
        if len(rows) != len(texts):  # each row is exactly one line
            return None
        if self._unescape is not None and "\\" in joined:
            unescape = self._unescape
            rows = [tuple(unescape(v) if "\\" in v else v for v in row) for row in rows]
        pick = self._pick
        method_of = nginx_log.method_of
        failed = [
            index
            for index, (status, method, request, *rest) in enumerate(map(pick, rows))
            if not count(status, method_of(method, request), *rest)
        ]
        return failed[0] if failed else len(texts)
