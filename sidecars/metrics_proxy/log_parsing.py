"""The access log's lines into counted responses: through the configured format, or through
the one detected from the first lines (``--log-format auto``, the default, so a stock nginx's
``combined`` log is counted too).

Lines that do not parse are counted (``metrics_proxy_access_log_lines_total{result="unparsed"}``)
and the first one is logged with a sample and the setting that fixes it.
"""

from __future__ import annotations

import logging

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.runtime.log_format_detect import AUTO, Detection, sample
from sidecars.runtime.logs import kv
from sidecars.runtime.nginx_log import LogFormatParser, load_log_format

log = logging.getLogger("sidecars.metrics_proxy")

FIX = "set METRICS_PROXY_LOG_FORMAT (--log-format) to the access log's nginx log_format"
# Until the format is known only the families every format has are served.
_UNDECIDED = frozenset({"status"})


class AccessLogParsing:
    def __init__(self, log_format: str, access: AccessLogMetrics) -> None:
        self.access = access
        self.detection: Detection | None = None
        self.parser: LogFormatParser | None = None
        self._warned = False
        if log_format == AUTO:
            self.detection = Detection()
            access.logged = _UNDECIDED
        else:
            self._use(load_log_format(log_format))

    def _use(self, parser: LogFormatParser) -> None:
        self.parser = parser
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
        parse = parser.parse
        for text in texts:
            fields = parse(text)
            if not observe(fields) and not self._warned:
                self._warn(
                    "access-log lines do not match the log format (or have no status); "
                    "counted as unparsed",
                    text,
                )

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
