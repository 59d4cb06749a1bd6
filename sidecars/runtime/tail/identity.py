"""What makes two files "the same log": a fingerprint of the first line's bytes.

The inode alone is not enough: a rotated-away file's inode is reused for a new file, and a copy
(``copytruncate`` leaves ``access.log.1``) has a new inode but the same content. The fingerprint
is a hash of the first line (up to ``FINGERPRINT_MAX`` bytes), so a reused inode gets a new
identity and a copy is recognised as content already read. Two unrelated files whose first lines
are byte-identical are taken for copies of each other; nginx's lines carry a timestamp, so this
does not happen with its logs.
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_MAX = 1024


def fingerprint_of(head: bytes) -> tuple[str, int] | None:
    """``head`` is a file's first bytes (up to FINGERPRINT_MAX). Returns (fingerprint, number
    of bytes hashed), or None while the first line is still incomplete and shorter than the
    maximum: the identity is not settled yet (nothing can be shipped from it anyway, since a
    partial line is held)."""
    newline = head.find(b"\n", 0, FINGERPRINT_MAX)
    if newline >= 0:
        size = newline + 1
    elif len(head) >= FINGERPRINT_MAX:
        size = FINGERPRINT_MAX
    else:
        return None
    digest = hashlib.blake2b(head[:size], digest_size=8).hexdigest()
    return digest, size


def read_fingerprint(fd: int) -> tuple[str, int] | None:
    return fingerprint_of(os.pread(fd, FINGERPRINT_MAX, 0))


def still_matches(fd: int, fingerprint: str, size: int) -> bool:
    """Whether the file behind ``fd`` still starts with the bytes that gave ``fingerprint``
    (false after a truncation, also one already followed by new writes past our position)."""
    head = os.pread(fd, size, 0)
    if len(head) < size:
        return False
    return hashlib.blake2b(head, digest_size=8).hexdigest() == fingerprint
