"""Which parser each file's lines go through: a fixed one (--format / --log-format), one
detected per file from its first lines (the default), or none (--format none).

Shared by the sink pipelines, so every sink gets the same fields for a file and each warning is
logged once, not once per sink. Lines that do not parse are shipped raw and counted; the first
one of each file is logged with a sample and the setting that fixes it.
"""

from __future__ import annotations

import logging
from typing import Any

from sidecars.log_shipper.chunk_fields import ChunkParser, LineTimes
from sidecars.runtime.log_format_detect import AUTO, ERROR_LOG, Detection, sample
from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.log_shipper")

_REMEMBERED = 1024  # detections kept (one per file content; rotation makes new ones)
FIX = (
    "set LOG_SHIPPER_LOG_FORMAT (--log-format) to the file's nginx log_format, or "
    "LOG_SHIPPER_FORMAT (--format) to combined, sidecars, json or none"
)


class LineFormats:
    def __init__(self, parser: Any) -> None:
        """``parser``: None (no parsing), AUTO, or a compiled parser."""
        self.auto = parser == AUTO
        self.fixed = None if self.auto else parser
        self._detections: dict[str, Detection] = {}
        self._warned: set[str] = set()  # paths whose unparsed lines were reported
        self._announced: dict[str, str] = {}  # path -> the format last logged as detected
        self._chunk_parsers: dict[int, ChunkParser] = {}  # id(parser) -> its chunk form

    @property
    def parsing(self) -> bool:
        return self.auto or self.fixed is not None

    def parse(self, fingerprint: str, path: str, texts: list[str]) -> tuple[list[Any] | None, int]:
        """The fields of ``texts`` (None when nothing is parsed: --format none) and how many
        of them did not parse. In auto mode the list is always there (None per line while a
        file's format is unknown), so a batch's fields stay aligned with its lines.

        A line's fields are a dict, or a marker standing for them when the chunk was parsed in
        one pass (chunk_fields.Deferred); None when the line did not parse."""
        fields, unparsed, _ = self.parse_chunk(fingerprint, path, texts)
        return fields, unparsed

    def parse_chunk(
        self, fingerprint: str, path: str, texts: list[str]
    ) -> tuple[list[Any] | None, int, LineTimes | None]:
        """``parse()``, plus the lines' times when the chunk was parsed in one pass (for
        ``Stamper.stamp``; None: the stamper reads them from the fields)."""
        if not self.auto:
            if self.fixed is None:
                return None, 0, None
            return self._parse_with(self.fixed, path, texts)
        detection = self._detection(fingerprint)
        if not detection.settled and detection.feed(texts):
            self._settled(detection, path)
        if detection.parser is not None:
            return self._parse_with(detection.parser, path, texts)
        if detection.format == ERROR_LOG:
            return [None] * len(texts), 0, None  # an error log: raw by nature, not "unparsed"
        return [None] * len(texts), len(texts), None

    def _detection(self, fingerprint: str) -> Detection:
        detection = self._detections.get(fingerprint)
        if detection is None:
            detection = self._detections[fingerprint] = Detection()
            while len(self._detections) > _REMEMBERED:
                del self._detections[next(iter(self._detections))]
        return detection

    def _parse_with(
        self, parser: Any, path: str, texts: list[str]
    ) -> tuple[list[Any], int, LineTimes | None]:
        chunk_parser = self._chunk_parsers.get(id(parser))
        if chunk_parser is None or chunk_parser.parser is not parser:
            chunk_parser = self._chunk_parsers[id(parser)] = ChunkParser(parser)
        fields, times = chunk_parser.parse(texts)
        if times is not None:
            return fields, 0, times  # every line matched
        unparsed = fields.count(None)
        if unparsed and path not in self._warned:
            self._warned.add(path)
            line = texts[fields.index(None)]
            log.warning(
                "lines do not match the log format; shipped raw and counted in "
                "log_shipper_unparsed_lines_total (logged once per file)",
                extra=kv(path=path, format=_name(parser), sample=sample(line), fix=FIX),
            )
        return fields, unparsed, None

    def _settled(self, detection: Detection, path: str) -> None:
        if detection.gave_up:
            if path not in self._warned:
                self._warned.add(path)
                log.warning(
                    "no known log format (combined, sidecars, json) in the first lines; "
                    "lines are shipped raw and counted in log_shipper_unparsed_lines_total",
                    extra=kv(path=path, sample=sample(detection.first_line), fix=FIX),
                )
            return
        if self._announced.get(path) != detection.format:  # not again at every rotation
            self._announced[path] = detection.format or ""
            log.info("log format detected", extra=kv(path=path, format=detection.format))


def _name(parser: Any) -> str:
    from sidecars.runtime.nginx_log import PRESETS

    for name, preset in PRESETS.items():
        if preset is parser:
            return name
    return str(getattr(parser, "format", parser))[:200]
