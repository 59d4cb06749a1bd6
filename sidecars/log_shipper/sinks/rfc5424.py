"""Records as RFC 5424 syslog messages, framed by octet counting (RFC 6587 section 3.4.1).

Pure logic shared by the syslog and RELP sinks. A message is

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA SP MSG

with facility local7 and severity info (nginx's own syslog defaults), TIMESTAMP the record's
deterministic time (so a re-sent line carries the same header), MSGID the log file's name
("access", "error") unless set, and MSG the line's bytes as they are. No BOM is sent: the line
is what nginx wrote, which need not be UTF-8 (RFC 5424 MSG-ANY).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sidecars.log_shipper.sinks.base import Batch, Record

FACILITY_LOCAL7 = 23
SEVERITY_INFO = 6
# RFC 5612's example enterprise number: an SD-ID of our own needs "name@<number>".
SD_ENTERPRISE = 32473

_LIMITS = {"hostname": 255, "app-name": 48, "procid": 128, "msgid": 32}
_PRINTUSASCII = re.compile(r"[\x21-\x7e]+")
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_SD_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')


def check_header_field(what: str, value: str) -> str:
    """A header field set by the user: printable ASCII without blanks, within RFC 5424's limit.
    Raises ValueError naming the field; the NILVALUE "-" is allowed."""
    limit = _LIMITS[what]
    if not _PRINTUSASCII.fullmatch(value):
        raise ValueError(f"syslog {what} {value!r} must be printable ASCII without blanks")
    if len(value) > limit:
        raise ValueError(f"syslog {what} {value!r} is longer than {limit} characters")
    return value


def clean_header_field(what: str, value: str) -> str:
    """A header field taken from the environment (host name, file name): made valid quietly."""
    cleaned = _NOT_PRINTUSASCII.sub("_", value)[: _LIMITS[what]]
    return cleaned or "-"


def default_hostname() -> str:
    # In a Pod this is the Pod's name, which is what a syslog reader wants to see.
    return clean_header_field("hostname", socket.gethostname())


def msgid_for_path(path: str) -> str:
    """``/var/log/nginx/access.log`` -> ``access``; ``error.log.1`` -> ``error``."""
    name = os.path.basename(path).split(".", 1)[0]
    return clean_header_field("msgid", name)


@lru_cache(maxsize=1024)
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_timestamp(timestamp_ns: int) -> str:
    """RFC 3339 in UTC with microseconds (RFC 5424's maximum precision)."""
    seconds, rest = divmod(timestamp_ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{rest // 1000:06d}Z"


def sd_escape(value: str) -> str:
    """PARAM-VALUE escaping: ``"``, ``\\`` and ``]`` get a backslash."""
    if '"' in value or "\\" in value or "]" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return value


def sd_element(sd_id: str, params: Iterable[tuple[str, str]]) -> str:
    parts = [sd_id]
    for name, value in params:
        clean = _SD_NAME_BAD.sub("_", name)[:32] or "_"
        parts.append(f'{clean}="{sd_escape(value)}"')
    return "[" + " ".join(parts) + "]"


def structured_data(record: Record) -> str:
    """Where the line came from, and its parsed fields when there are any."""
    origin = sd_element(
        f"file@{SD_ENTERPRISE}",
        (("path", record.path), ("fp", record.fingerprint), ("offset", str(record.offset))),
    )
    fields: Mapping[str, object] | None = record.fields
    if not fields:
        return origin
    return origin + sd_element(
        f"nginx@{SD_ENTERPRISE}", ((str(k), str(v)) for k, v in fields.items())
    )


def encode_text(text: str) -> bytes:
    """A line's bytes: UTF-8; a line kept with surrogateescape gets its original bytes back."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace")


@dataclass(frozen=True)
class Rfc5424Formatter:
    """Builds message bytes for records; header fields are checked once, here."""

    app_name: str = "nginx"
    hostname: str | None = None
    procid: str = "-"
    msgid: str | None = None  # None: from the record's file name
    structured: bool = False
    facility: int = FACILITY_LOCAL7
    severity: int = SEVERITY_INFO
    _head: str = field(init=False, repr=False)
    _msgids: dict[str, str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.facility <= 23 or not 0 <= self.severity <= 7:
            raise ValueError("syslog facility must be 0-23 and severity 0-7")
        check_header_field("app-name", self.app_name)
        check_header_field("procid", self.procid)
        if self.msgid is not None:
            check_header_field("msgid", self.msgid)
        hostname = (
            default_hostname()
            if self.hostname is None
            else check_header_field("hostname", self.hostname)
        )
        object.__setattr__(self, "hostname", hostname)
        object.__setattr__(self, "_head", f"<{self.facility * 8 + self.severity}>1 ")

    def _tail(self, path: str) -> str:
        # " HOSTNAME APP-NAME PROCID MSGID " is the same for every line of a file.
        tail = self._msgids.get(path)
        if tail is None:
            msgid = self.msgid or msgid_for_path(path)
            tail = f" {self.hostname} {self.app_name} {self.procid} {msgid} "
            self._msgids[path] = tail
        return tail

    def message(self, record: Record) -> bytes:
        sd = structured_data(record) if self.structured else "-"
        head = self._head + format_timestamp(record.timestamp_ns) + self._tail(record.path) + sd
        if not record.line:
            return head.encode("ascii", "replace")
        return (head + " ").encode("ascii", "replace") + encode_text(record.line)

    def messages(self, batch: Sequence[Record]) -> list[bytes]:
        """Every record's message; a ``Batch`` is read by column (no Record per line)."""
        if self.structured or not isinstance(batch, Batch):
            return [self.message(record) for record in batch]
        head, tail = self._head, self._tail(batch.path) + "- "
        stamp = format_timestamp
        try:
            # The header is ASCII, so the whole message encodes as UTF-8 in one go.
            return [
                f"{head}{stamp(ts)}{tail}{line}".encode()
                if line
                else f"{head}{stamp(ts)}{tail[:-1]}".encode()
                for line, ts in zip(batch.lines, batch.timestamps, strict=True)
            ]
        except UnicodeEncodeError:  # a line holding surrogates: the careful way
            return [self.message(record) for record in batch]


def octet_counted(message: bytes) -> bytes:
    """``MSG-LEN SP SYSLOG-MSG``: the length in octets, so any byte may appear in the message."""
    return b"%d %s" % (len(message), message)


class OctetCountingError(ValueError):
    """The stream is not octet-counted syslog."""


class OctetCountingDecoder:
    """Incremental decoder of an octet-counted stream (the receiving side; used by tests and by
    anyone checking what a sink wrote)."""

    def __init__(self, max_message: int = 64 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        buf = self._buffer
        start = 0
        while True:
            space = buf.find(b" ", start, start + 12)
            if space < 0:
                if len(buf) - start >= 12:
                    raise OctetCountingError("no message length within 11 digits")
                break
            digits = bytes(buf[start:space])
            if not digits.isdigit() or digits.startswith(b"0"):
                raise OctetCountingError(f"bad message length {digits[:20]!r}")
            length = int(digits)
            if length > self._max:
                raise OctetCountingError(f"message of {length} octets exceeds {self._max}")
            end = space + 1 + length
            if end > len(buf):
                break
            messages.append(bytes(buf[space + 1 : end]))
            start = end
        del buf[:start]
        return messages

    @property
    def pending(self) -> int:
        return len(self._buffer)
