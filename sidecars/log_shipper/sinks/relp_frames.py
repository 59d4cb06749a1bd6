"""RELP frames (rsyslog's Reliable Event Logging Protocol), pure: encode, parse, responses.

    FRAME   = TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER      TRAILER = LF
    TXNR    = 1..999999999, one per command, wrapping to 1; the answer ("rsp") carries it
    COMMAND = open | syslog | close | rsp | serverclose         DATALEN = octets of DATA
    rsp DATA = CODE [SP HUMANTEXT] [LF RSP-DATA]                 CODE 200 = OK, 500 = error

A session starts with ``open`` carrying offers (``name=value`` lines: relp_version, commands)
and ends with ``close``; the server may announce ``serverclose`` (txnr 0) before dropping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sidecars import __version__

MAX_TXNR = 999_999_999
RELP_VERSION = "0"
# What a server sends is tiny (responses); anything far larger is not RELP.
MAX_SERVER_DATA = 1024 * 1024

_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})")
_MAX_HEADER = 9 + 1 + 32 + 1 + 9
_OK_RUN = re.compile(rb"(?:\d{1,9} rsp 6 200 OK\n)+")
_OK_TXNR = re.compile(rb"(\d+) rsp")


class RelpProtocolError(Exception):
    """The peer did not speak RELP; the connection must be dropped."""


@dataclass(frozen=True, slots=True)
class Frame:
    txnr: int
    command: str
    data: bytes


def next_txnr(txnr: int) -> int:
    return 1 if txnr >= MAX_TXNR else txnr + 1


def txnr_run(last: int, count: int) -> Sequence[int]:
    """The ``count`` txnrs after ``last`` (a plain range unless the sequence wraps)."""
    if last + count <= MAX_TXNR:
        return range(last + 1, last + count + 1)
    txnrs = []
    for _ in range(count):
        last = next_txnr(last)
        txnrs.append(last)
    return txnrs


def encode_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    if not 0 <= txnr <= MAX_TXNR:
        raise ValueError(f"RELP txnr {txnr} out of range 0-{MAX_TXNR}")
    if data:
        return b"%d %s %d %s\n" % (txnr, command.encode("ascii"), len(data), data)
    return b"%d %s 0\n" % (txnr, command.encode("ascii"))


def open_offers(software: str = f"sidecars,{__version__}") -> bytes:
    return f"relp_version={RELP_VERSION}\nrelp_software={software}\ncommands=syslog".encode()


class FrameParser:
    """Incremental: ``feed(bytes)`` returns every frame completed so far."""

    def __init__(self, max_data: int = MAX_SERVER_DATA) -> None:
        self._buffer = bytearray()
        self._max_data = max_data

    def feed(self, data: bytes) -> list[Frame]:
        return self._parse(data, fast=False)[1]

    def feed_acks(self, data: bytes) -> tuple[list[int], list[Frame]]:
        """Like ``feed``, but the plain ``rsp 200 OK`` answers, nearly all a server sends,
        come back as bare txnrs (in order, separately from the other frames): a client
        acknowledging 100k messages a second cannot afford an object per answer."""
        return self._parse(data, fast=True)

    def _parse(self, data: bytes, *, fast: bool) -> tuple[list[int], list[Frame]]:
        self._buffer += data
        buf = self._buffer
        acks: list[int] = []
        frames: list[Frame] = []
        start = 0
        while start < len(buf):
            run = _OK_RUN.match(buf, start) if fast else None
            if run is not None:
                acks += map(int, _OK_TXNR.findall(buf, start, run.end()))
                start = run.end()
                continue
            match = _HEADER.match(buf, start)
            if match is None or match.end() == len(buf):
                self._check_incomplete_header(buf, start)
                break
            txnr, command, length = int(match[1]), match[2].decode("ascii"), int(match[3])
            if length > self._max_data:
                raise RelpProtocolError(f"RELP frame of {length} octets exceeds {self._max_data}")
            pos = match.end()
            if length:
                if buf[pos] != 0x20:
                    raise RelpProtocolError("RELP frame: expected a space before DATA")
                pos += 1
            elif buf[pos] == 0x20:
                pos += 1  # tolerate "DATALEN SP" with no data
            end = pos + length
            if end >= len(buf):
                break  # DATA or its trailer not here yet
            if buf[end] != 0x0A:
                raise RelpProtocolError("RELP frame: missing LF trailer after DATA")
            frames.append(Frame(txnr, command, bytes(buf[pos:end])))
            start = end + 1
        del buf[:start]
        return acks, frames

    @staticmethod
    def _check_incomplete_header(buf: bytearray, start: int) -> None:
        head = bytes(buf[start : start + _MAX_HEADER + 1])
        # Still a possible prefix of "TXNR SP COMMAND SP DATALEN"? Otherwise it is garbage.
        if not re.fullmatch(
            rb"\d{0,9}|\d{1,9} [A-Za-z]{0,32}|\d{1,9} [A-Za-z]{1,32} \d{0,9}", head
        ):
            raise RelpProtocolError(f"not a RELP frame: {head[:40]!r}")


@dataclass(frozen=True, slots=True)
class Response:
    code: int
    text: str
    data: bytes

    @property
    def ok(self) -> bool:
        return self.code == 200


def parse_response(data: bytes) -> Response:
    """``200 OK\\nrelp_version=0\\n...`` -> Response(200, "OK", b"relp_version=0\\n...")."""
    head, _, rest = data.partition(b"\n")
    code_text, _, human = head.partition(b" ")
    if len(code_text) != 3 or not code_text.isdigit():
        raise RelpProtocolError(f"RELP rsp without a 3-digit code: {head[:40]!r}")
    return Response(int(code_text), human.decode("utf-8", "replace"), rest)


def parse_offers(data: bytes) -> dict[str, str]:
    """Offer lines ``name=value`` (value may be empty or absent) into a dict."""
    offers: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        if line:
            name, _, value = line.partition("=")
            offers[name.strip()] = value.strip()
    return offers
