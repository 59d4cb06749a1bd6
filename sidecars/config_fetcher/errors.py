"""Failure kinds of the fetch -> verify -> publish pipeline.

``transient`` decides what an init container does: retry with backoff until its deadline
(connection refused, 5xx, 429, a stalled or truncated body), or fail fast because retrying
cannot help (404, a pinned digest that does not match, a corrupt archive, an unreadable token).
"""

from __future__ import annotations


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

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=True)
