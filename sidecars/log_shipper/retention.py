"""How much log the volume holds for the sinks, and what goes when a cap is passed (pure logic).

Held bytes are what the shipper keeps on the volume on the sinks' behalf: every rotated file
still there (whole: a file is only deleted whole) plus, of each live file, the part the
slowest sink has not acknowledged. Past ``--max-held-bytes`` the oldest rotated files are
dropped first, as many as it takes to get back under the cap: the newest data is what a
recovering sink most likely still wants, and a live file cannot be dropped (nginx writes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RotatedFile:
    path: str
    size: int
    fingerprint: str | None  # None while its first line is unreadable (then never complete)
    acked: tuple[int, ...]  # per sink: the offset up to which it acknowledged this content
    order: str  # sorts oldest first (the rotation time in its name)

    @property
    def acknowledged(self) -> bool:
        """Every sink has acknowledged all of it."""
        return self.fingerprint is not None and all(offset >= self.size for offset in self.acked)


def unacked(size: int, acked: Sequence[int]) -> int:
    """Bytes of a file the slowest sink has not acknowledged."""
    return max(0, size - min(acked, default=0))


def held_bytes(rotated: Sequence[RotatedFile], live_unacked: int) -> int:
    return sum(f.size for f in rotated) + live_unacked


def over_cap(rotated: Sequence[RotatedFile], live_unacked: int, cap: int) -> list[RotatedFile]:
    """The rotated files to drop, oldest first, to bring the held bytes to ``cap`` or under
    (all of them if even that is not enough). ``cap`` 0 means no cap."""
    held = held_bytes(rotated, live_unacked)
    drop: list[RotatedFile] = []
    if not cap:
        return drop
    for victim in sorted(rotated, key=lambda f: (f.order, f.path)):
        if held <= cap:
            break
        drop.append(victim)
        held -= victim.size
    return drop
