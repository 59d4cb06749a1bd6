"""Bodies of families whose layout stays while their values change: our own metrics.

A scrape of the metrics-proxy renders the same names, types, help texts and label sets each
time, and only the numbers move. A ``Template`` renders the text around the numbers once per
format; a scrape then formats its numbers into it in one call, byte for byte what
``exposition.render`` writes for the same families (tests/unit/metrics_proxy/test_template.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecars.metrics_proxy.exposition import Family, Format, format_value, layout, render
from sidecars.metrics_proxy.exposition import _format_labels as _label_text

_EXACT = 2**53  # below it an integer is a float exactly, and format_value prints it as one


def format_number(value: float) -> str:
    """``format_value(float(value))``, without the float for an integer (the usual value)."""
    if type(value) is int and -_EXACT < value < _EXACT:
        return str(value)
    return format_value(float(value))


class Template:
    """``render(values, fmt)`` is ``render(families, fmt, end=False)`` for the same families
    with their samples' values replaced by ``values``, given in the families' sample order."""

    __slots__ = ("_patterns", "size")
    _patterns: dict[Format, tuple[str, tuple[int, ...] | None]]

    def __init__(self, families: Sequence[Family]) -> None:
        self.size = sum(len(family.samples) for family in families)
        self._patterns = {fmt: self._pattern(families, fmt) for fmt in Format}

    @staticmethod
    def _pattern(families: Sequence[Family], fmt: Format) -> tuple[str, tuple[int, ...] | None]:
        """A %-format string with a ``%s`` per shown sample, and the index of each one's
        value among all the samples where the format leaves some out (else None)."""
        parts: list[str] = []
        slots: list[int] = []
        first = 0
        for family in families:
            head, shown = layout(family, fmt)
            parts.append(head.replace("%", "%%"))
            index = {id(sample): first + i for i, sample in enumerate(family.samples)}
            for sample in shown:
                if sample.timestamp is not None:
                    raise ValueError(f"{sample.name}: a template has no timestamps")
                line = f"{sample.name}{_label_text(sample.labels)} "
                parts.append(line.replace("%", "%%") + "%s\n")
                slots.append(index[id(sample)])
            first += len(family.samples)
        every = slots == list(range(first))
        return "".join(parts), None if every else tuple(slots)

    def render(self, values: Sequence[float], fmt: Format) -> bytes:
        if len(values) != self.size:
            raise ValueError(f"{len(values)} values for a template of {self.size} samples")
        pattern, slots = self._patterns[fmt]
        if slots is not None:  # the format leaves some samples out
            values = [values[i] for i in slots]
        # format_number inlined: a call per value would cost more than formatting it
        return (
            pattern
            % tuple(
                [
                    str(v) if type(v) is int and -_EXACT < v < _EXACT else format_value(float(v))
                    for v in values
                ]
            )
        ).encode()


class Block:
    """Families rendered at most once per format (a part of a body: no ``# EOF``)."""

    __slots__ = ("_bodies", "families")

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = families
        self._bodies: dict[Format, bytes] = {}

    def render(self, fmt: Format) -> bytes:
        body = self._bodies.get(fmt)
        if body is None:
            body = self._bodies[fmt] = render(self.families, fmt, end=False)
        return body
