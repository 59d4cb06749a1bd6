"""Metric families and their two wire formats: Prometheus text 0.0.4 and OpenMetrics 1.0.0.

prometheus_client's encoders cannot serve what this part must: nginx-prometheus-exporter's
counters (``nginx_connections_accepted``) have no ``_total`` suffix, which the client library
always adds. A family here keeps exactly the sample names it was given; only the OpenMetrics
writer maps what that format cannot express (see ``_om_header``).
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# The types a family may have here; OpenMetrics-only types are normalised on the way in.
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float
    timestamp: float | None = None  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Family:
    """One ``# TYPE`` block; ``name`` is the name its HELP/TYPE lines carry in the text format."""

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"metric {self.name}: unsupported type {self.type!r}")

    def om_name(self) -> str:
        """The family's name in OpenMetrics, where a counter's name drops ``_total``."""
        if self.type == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name

    def claimed_names(self) -> set[str]:
        """Every name this family occupies in either format; two families whose claims meet
        cannot both be exposed (Prometheus would reject or mix them)."""
        names = {self.name, self.om_name()}
        names.update(sample.name for sample in self.samples)
        # OpenMetrics reserves a _created sample for these types, whether one is given or not.
        if self.type == "histogram":
            names.update(self.name + suffix for suffix in ("_bucket", "_sum", "_count", "_created"))
        elif self.type == "summary":
            names.update(self.name + suffix for suffix in ("_sum", "_count", "_created"))
        elif self.type == "counter" and self.name.endswith("_total"):
            names.add(self.om_name() + "_created")
        return names


class Format(enum.Enum):
    TEXT = "text/plain; version=0.0.4; charset=utf-8"
    OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    @property
    def content_type(self) -> str:
        return self.value


def _media_ranges(accept: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for item in accept.split(","):
        parts = [part.strip() for part in item.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        yield parts[0].lower(), params, quality


def negotiate(accept: str) -> Format:
    """OpenMetrics when the scraper prefers it (Prometheus does), the text format otherwise;
    a missing or unsatisfiable Accept gets the text format, as every exporter does."""
    best_om = best_text = 0.0
    for media, params, quality in _media_ranges(accept):
        if media == "application/openmetrics-text":
            if params.get("version", "1.0.0") in ("1.0.0", "0.0.1"):
                best_om = max(best_om, quality)
        elif media in ("text/plain", "text/*", "*/*"):
            best_text = max(best_text, quality)
    return Format.OPENMETRICS if best_om > 0 and best_om >= best_text else Format.TEXT


def format_value(value: float) -> str:
    if value.is_integer():  # False for NaN and the infinities
        if -(2**53) < value < 2**53:
            return str(int(value))
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, fmt: Format) -> str:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if fmt is Format.OPENMETRICS else escaped


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels) + "}"


# The same label sets come back on every scrape; format each once. Not for a large snapshot
# (see render): its label sets would fill the cache and keep their memory from being reused.
_label_text = functools.lru_cache(maxsize=16384)(_format_labels)

# Above this many samples a body is rendered without the cache.
UNCACHED_ABOVE = 20_000


def _sample_line(sample: Sample, fmt: Format, label_text: Callable[[Labels], str]) -> str:
    line = f"{sample.name}{label_text(sample.labels)} {format_value(sample.value)}"
    if sample.timestamp is not None:
        if fmt is Format.OPENMETRICS:
            line += f" {format_value(sample.timestamp)}"
        else:
            line += f" {round(sample.timestamp * 1000)}"
    return line + "\n"


def _om_header(family: Family) -> tuple[str, str, tuple[Sample, ...]]:
    """OpenMetrics name, type and samples of ``family``.

    A counter whose name lacks ``_total`` cannot be an OpenMetrics counter without renaming its
    series, which would break every dashboard built on nginx-prometheus-exporter; it is exposed
    as ``unknown`` under its exact name instead, so the stored series are the same in both
    formats. ``_created`` samples stay only where OpenMetrics defines them.
    """
    samples = family.samples
    if family.type == "counter":
        if family.name.endswith("_total"):
            return family.om_name(), "counter", samples
        kept = tuple(s for s in samples if s.name == family.name)
        return family.name, "unknown", kept
    if family.type == "untyped":
        return family.name, "unknown", samples
    return family.name, family.type, samples


def _text_samples(family: Family) -> tuple[Sample, ...]:
    # In the text format a _created sample would be stored as a series of its own.
    if family.type in ("counter", "histogram", "summary"):
        created = family.om_name() + "_created"
        return tuple(s for s in family.samples if s.name != created)
    return family.samples


# Lines encoded together: a large body (a merged upstream) is built from encoded pieces, so the
# lines, their joined text and the bytes are never all held at once.
_PIECE = 4096


def layout(family: Family, fmt: Format) -> tuple[str, tuple[Sample, ...]]:
    """The family's HELP and TYPE lines in ``fmt``, and the samples that format shows."""
    if fmt is Format.OPENMETRICS:
        name, kind, samples = _om_header(family)
    else:
        name, kind, samples = family.name, family.type, _text_samples(family)
    head = f"# HELP {name} {_escape_help(family.help, fmt)}\n" if family.help else ""
    return head + f"# TYPE {name} {kind}\n", samples


def render(families: Sequence[Family], fmt: Format, *, end: bool = True) -> bytes:
    """The body of ``families`` in ``fmt``; ``end=False`` leaves out OpenMetrics' ``# EOF``
    (a part of a body that others follow)."""
    pieces: list[bytes] = []
    out: list[str] = []
    large = sum(len(family.samples) for family in families) > UNCACHED_ABOVE
    label_text = _format_labels if large else _label_text
    for family in families:
        head, samples = layout(family, fmt)
        out.append(head)
        for start in range(0, len(samples), _PIECE):
            out.extend(
                _sample_line(sample, fmt, label_text) for sample in samples[start : start + _PIECE]
            )
            if len(out) >= _PIECE:
                pieces.append("".join(out).encode())
                out.clear()
    if end and fmt is Format.OPENMETRICS:
        out.append("# EOF\n")
    if not pieces:  # the usual size: one piece, no second copy
        return "".join(out).encode()
    pieces.append("".join(out).encode())
    return b"".join(pieces)


def add_labels(family: Family, extra: Labels) -> Family:
    """``family`` with ``extra`` on every sample. A sample's own label of the same name is kept
    as ``exported_<name>``, as Prometheus does when it attaches target labels."""
    if not extra:
        return family
    names = {name for name, _ in extra}
    samples = []
    for sample in family.samples:
        own: dict[str, str] = {}
        for key, value in sample.labels:
            own[f"exported_{key}" if key in names else key] = value
        labels = tuple((k, v) for k, v in own.items() if k not in names) + extra
        samples.append(Sample(sample.name, labels, sample.value, sample.timestamp))
    return Family(family.name, family.type, family.help, tuple(samples))
