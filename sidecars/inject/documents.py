"""The YAML stream as documents: each keeps its original text (written back byte for byte when
the injector leaves it alone) beside its round-trip parse (comments, order and quoting kept
when it is changed). YAML 1.2 parsing keeps ``0644`` as written; the dump never reinterprets it.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    DocumentStartEvent,
)

from sidecars.inject.errors import InjectError

# Wide enough that the dump never re-wraps a long line of the user's.
_WIDTH = 4096
_SEQ = re.compile(r"^( *)- ")
# Real manifests nest 10-40 levels (CRD schemas are the deepest). The parser slows down with the
# square of flow nesting (`[[[[...`: 2 s at 1000 levels) and loading recurses per level, so
# deeper input is refused while it is being parsed, before either costs anything.
MAX_DEPTH = 100


@dataclasses.dataclass
class Document:
    number: int  # 1-based, as in the report and errors
    line: int  # 1-based line of its first node in the input
    prefix: str  # text before the document's own start (comments before its `---`)
    text: str  # the document's own text, from its `---` (or first node) to the next one
    explicit: bool  # starts with `---`
    data: Any  # the round-trip parse; None for an empty (comments-only) document


def _yaml() -> YAML:
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = _WIDTH
    return rt


def _where(exc: YAMLError) -> int | None:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return mark.line + 1
    return None


def _problem(exc: YAMLError) -> str:
    if isinstance(exc, MarkedYAMLError):
        return " ".join(filter(None, (exc.context, exc.problem))) or type(exc).__name__
    return str(exc).splitlines()[0]


def split(text: str) -> list[Document]:
    """Parse the stream; broken YAML is an InjectError naming the document and line."""
    spans: list[tuple[int, int, bool]] = []  # start index, start line, explicit
    ends: list[int] = []
    depth = 0
    try:
        for event in _yaml().parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InjectError(
                        f"broken YAML: nested more than {MAX_DEPTH} levels deep",
                        document=len(spans) or 1,
                        line=event.start_mark.line + 1,
                    )
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            elif isinstance(event, DocumentStartEvent):
                spans.append((event.start_mark.index, event.start_mark.line, bool(event.explicit)))
            elif isinstance(event, DocumentEndEvent):
                ends.append(event.end_mark.index)
    except YAMLError as exc:
        raise InjectError(
            f"broken YAML: {_problem(exc)}", document=len(spans) or 1, line=_where(exc)
        ) from None
    docs = []
    previous_end = 0
    for i, (start, line, explicit) in enumerate(spans):
        end = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        own = text[start:end]
        try:
            data = _yaml().load(own)
        except RecursionError:
            raise InjectError(
                "broken YAML: nested too deeply", document=i + 1, line=line + 1
            ) from None
        except YAMLError as exc:  # e.g. a duplicate key: the composer's, not the parser's
            at = _where(exc)
            raise InjectError(
                f"broken YAML: {_problem(exc)}",
                document=i + 1,
                line=None if at is None else at + line,
            ) from None
        docs.append(Document(i + 1, line + 1, text[previous_end:start], own, explicit, data))
        previous_end = end
    if previous_end < len(text):  # comments after the last document, or a stream of comments
        if docs:
            docs[-1].text += text[previous_end:]
        else:
            docs.append(Document(1, 1, text, "", False, None))
    return docs


def indent_of(text: str) -> tuple[int, int]:
    """(sequence indent, dash offset) of a document's block sequences, as its author wrote
    them: `- ` under its key (0) or indented below it (2, as Helm charts do)."""
    lines = text.splitlines()
    for i, raw in enumerate(lines[1:], 1):
        match = _SEQ.match(raw)
        if not match:
            continue
        parent = lines[i - 1]
        if parent.rstrip().endswith(":") and not parent.lstrip().startswith("#"):
            offset = len(match.group(1)) - (len(parent) - len(parent.lstrip()))
            if offset >= 0:
                return offset + 2, offset
    return 2, 0


def dump(data: Any, *, like: str = "", explicit: bool = True) -> str:
    """One document in round-trip form, indented like ``like`` (its original text)."""
    rt = _yaml()
    sequence, offset = indent_of(like)
    rt.indent(mapping=2, sequence=sequence, offset=offset)
    rt.explicit_start = explicit
    buf = io.StringIO()
    rt.dump(data, buf)
    return buf.getvalue()


def load_one(text: str) -> Any:
    """One node's round-trip parse (a volume saved as text in the marker annotation)."""
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise InjectError(f"broken YAML: {_problem(exc)}") from None
