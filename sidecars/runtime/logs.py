"""JSON logging: one object per line on stdout, so `kubectl logs` output is machine-readable."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "part": self.part,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(part: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(part))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # watchfiles logs "N changes detected" at INFO for every event batch.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def kv(**fields: Any) -> dict[str, Any]:
    """Structured fields for a log call: ``log.info("published", extra=kv(version=v))``."""
    return {"fields": fields}


def fatal_line(part: str, message: str, **fields: Any) -> str:
    """The one JSON line printed when a part cannot start (before logging is configured)."""
    entry = {"level": "error", "part": part, "msg": message, **fields}
    return json.dumps(entry, default=str, ensure_ascii=False)
