"""Value parsers for settings: pure functions that raise ValueError with a short reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


# ASCII digits only (\d would take any script's digits); \Z, as $ also matches before a "\n".
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# Past this a duration is a typo, and timeouts that large overflow C-level waits.
MAX_DURATION = 10 * 365 * 24 * 3600.0


def parse_duration(raw: str) -> float:
    """Seconds; accepts a bare number (seconds) or a unit suffix: 250ms, 2s, 5m, 1h."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError("expected a duration such as 30, 2.5s, 250ms, 5m or 1h")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not value <= MAX_DURATION:  # also catches inf from hundreds of digits
        raise ValueError("too large: at most 10 years")
    return value


def parse_positive_duration(raw: str) -> float:
    value = parse_duration(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*\Z", re.IGNORECASE)
MAX_SIZE = 2**50  # 1 PiB: past it a size is a typo (and overflows C-level reads)


def parse_size(raw: str) -> int:
    """Bytes; accepts 1048576, 512KiB, 1MiB, 10MB, 2GiB (Ki/Mi/Gi are powers of 1024)."""
    match = _SIZE.match(raw)
    if not match:
        raise ValueError("expected a size such as 1048576, 512KiB, 1MiB or 10MB")
    digits, unit = match.group(1), (match.group(2) or "").lower()
    if len(digits.lstrip("0")) > 20:
        raise ValueError("too large: at most 1PiB")
    number = int(digits)
    if unit not in ("", "b"):
        base = 1024 if "i" in unit else 1000
        number *= base ** ("kmgt".index(unit[0]) + 1)
    if number > MAX_SIZE:
        raise ValueError("too large: at most 1PiB")
    return number


def parse_positive_size(raw: str) -> int:
    value = parse_size(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hostport(raw: str) -> HostPort:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[v6]:PORT``."""
    value = raw.strip()
    # A host name holds no blanks or control characters (they would fail only at bind time).
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]\s\x00-\x1f\x7f]*)):([0-9]{1,5})", value)
    if not match:
        raise ValueError("expected HOST:PORT, :PORT or [IPv6]:PORT")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    port = int(match.group(3))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return HostPort(host, port)


def parse_http_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value


def parse_hex_sha256(raw: str) -> str:
    value = raw.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("expected 64 hex digits (optionally prefixed sha256:)")
    return value


def parse_log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("debug", "info", "warning", "error"):
        raise ValueError("expected one of debug, info, warning, error")
    return value


def parse_regex(raw: str) -> re.Pattern[str]:
    try:
        return re.compile(raw)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except (RecursionError, OverflowError):  # nesting or repeat counts past the re module's
        raise ValueError("not a valid regular expression: too deeply nested or too large") from None


def parse_nonnegative_int(raw: str) -> int:
    text = raw.strip()
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise ValueError("must be 0 or more")
    # int() would also take "+3", "1_000" and other scripts' digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValueError("expected a whole number")
    return int(text)


def choice(*allowed: str):
    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    parse.__name__ = f"choice({'|'.join(allowed)})"
    return parse
