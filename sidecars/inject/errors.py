"""The injector's one error type: exit 2 with one line."""

from __future__ import annotations


class InjectError(Exception):
    """Refused input or options; ``str()`` is the one line printed before exit 2."""

    def __init__(self, message: str, *, document: int | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.document, self.line = message, document, line

    def located(self, document: int, line: int | None) -> InjectError:
        if self.document is not None:
            return self
        return InjectError(self.message, document=document, line=line)

    def __str__(self) -> str:
        where = [f"document {self.document}"] if self.document is not None else []
        where += [f"line {self.line}"] if self.line is not None else []
        return f"{', '.join(where)}: {self.message}" if where else self.message
