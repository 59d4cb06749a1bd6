"""The injector's one error type: exit 2 with one line."""

from __future__ import annotations

from typing import Any


def line_of(node: Any, key: Any = None) -> int | None:
    """A round-trip node's line (of its ``key``, for a mapping's entry) in its document's text,
    0-based; None for a node the injector made."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    if key is not None:
        try:
            return int(lc.key(key)[0])
        except (KeyError, TypeError):
            return None
    return None if lc.line is None else int(lc.line)


class InjectError(Exception):
    """Refused input or options; ``str()`` is the one line printed before exit 2."""

    def __init__(
        self,
        message: str,
        *,
        document: int | None = None,
        line: int | None = None,
        node: Any = None,
        key: Any = None,
    ):
        super().__init__(message)
        self.message, self.document, self.line = message, document, line
        self.at = line_of(node, key)

    def located(self, document: int, line: int | None, first: int | None = None) -> InjectError:
        """Placed in the stream: document ``document``, its text starting at line ``first``;
        ``line`` when the offending node's own line is unknown."""
        if self.document is not None:
            return self
        if self.at is not None and first is not None:
            line = first + self.at
        return InjectError(self.message, document=document, line=line)

    def __str__(self) -> str:
        where = [f"document {self.document}"] if self.document is not None else []
        where += [f"line {self.line}"] if self.line is not None else []
        return f"{', '.join(where)}: {self.message}" if where else self.message
