"""nginx's stub_status page as a plain struct; knows nothing of Prometheus.

nginx prints::

    Active connections: 291
    server accepts handled requests
     16630948 16630948 31070465
    Reading: 6 Writing: 179 Waiting: 106

nginx-prometheus-exporter scans this with a fixed template, so one extra field (Tengine's
``request_time``, a patched build's counters) or a changed space breaks it. Here the page is
read as ``Name: number`` pairs plus a header line of names followed by a line of as many
numbers; any extra field or whitespace is ignored, and only a missing field is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PAIR = re.compile(r"([A-Za-z][A-Za-z _]*?)\s*:\s*(\d+)")
_NUMBERS = re.compile(r"^\d+(?:\s+\d+)*$")
_WORDS = re.compile(r"^[A-Za-z_]+(?:\s+[A-Za-z_]+)*$")

# field -> the names nginx uses for it, lowercased with single spaces
_FIELDS = {
    "active": "active connections",
    "accepted": "accepts",
    "handled": "handled",
    "requests": "requests",
    "reading": "reading",
    "writing": "writing",
    "waiting": "waiting",
}


class StubStatusError(ValueError):
    """The page is not a stub_status page; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class StubStatus:
    active: int
    accepted: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int


def _number(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # past Python's 4300-digit limit for int(): no counter is that long
        raise StubStatusError(f"not a stub_status page: a number of {len(digits)} digits") from None


def _fields(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    for index, line in enumerate(lines):
        for name, number in _PAIR.findall(line):
            found.setdefault(" ".join(name.lower().split()), _number(number))
        # "server accepts handled requests" then " 1 2 3": names and numbers pair up by position.
        if ":" not in line and _WORDS.match(line) and index + 1 < len(lines):
            following = lines[index + 1]
            if _NUMBERS.match(following):
                names, numbers = line.lower().split(), following.split()
                if names[0] == "server" and len(names) == len(numbers) + 1:
                    names = names[1:]
                if len(names) == len(numbers):
                    for name, number in zip(names, numbers, strict=True):
                        found.setdefault(name, _number(number))
    return found


# What nginx itself prints, matched in one go; anything else takes the tolerant path.
_EXACT = re.compile(
    r"Active connections: (\d+) \nserver accepts handled requests\n (\d+) (\d+) (\d+) \n"
    r"Reading: (\d+) Writing: (\d+) Waiting: (\d+) \n"
)


def parse_stub_status(text: str) -> StubStatus:
    exact = _EXACT.fullmatch(text)
    if exact is not None:
        active, accepted, handled, requests, reading, writing, waiting = map(
            _number, exact.groups()
        )
        return StubStatus(active, accepted, handled, requests, reading, writing, waiting)
    found = _fields(text)
    missing = [label for label in _FIELDS.values() if label not in found]
    if missing:
        raise StubStatusError("not a stub_status page: missing " + ", ".join(missing))
    return StubStatus(**{field: found[label] for field, label in _FIELDS.items()})
