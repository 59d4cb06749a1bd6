"""Failure kinds of the fetch -> verify -> publish pipeline.

``transient`` decides what an init container does: retry with backoff until its deadline
(connection refused, 5xx, 429, a stalled or truncated body), or fail fast because retrying
cannot help (404, a pinned digest that does not match, a corrupt archive, an unreadable token).
"""

from __future__ import annotations

import errno


class FetchError(Exception):
    """The source could not be read. ``reason`` is one line naming what failed."""

    stage = "fetch"

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class VerifyError(FetchError):
    """The bytes arrived but must not be published (digest, size, archive members, env)."""

    stage = "verify"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


class PublishError(FetchError):
    """Writing to the destination failed; what was published before is untouched."""

    stage = "publish"

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason, transient=transient)


# Publish failures that can pass while the fetcher waits: a full or over-quota volume (old
# versions are collected, logs rotated, an emptyDir's neighbours shrink), an I/O error of a
# network or failing disk, exhausted descriptors or memory, a busy or stale (NFS) handle.
# Everything else (permission denied, a read-only volume, a name clash such as a file where a
# directory must go, a name too long, a vanished --dest) is the same on every attempt: it fails
# fast, one line, exit 1 in --once.
TRANSIENT_PUBLISH_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.EBUSY,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.ESTALE,
        errno.ETIMEDOUT,
    }
)


def publish_error(what: str, exc: OSError) -> PublishError:
    """A PublishError for ``exc``, transient or not by its errno."""
    return PublishError(f"{what}: {exc}", transient=exc.errno in TRANSIENT_PUBLISH_ERRNOS)
