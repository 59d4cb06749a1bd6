"""Upstream ``/metrics`` bodies parsed into families, renamed, and merged with our own.

Parsing uses prometheus_client's parsers (text and OpenMetrics). An upstream body that does not
parse is rejected whole: serving half of it would make series vanish and reappear between
scrapes. Merging keeps our own families untouched, merges same-named families of the same type
from several upstreams, and drops what Prometheus would reject (a name claimed twice, a series
twice), counting every dropped series by reason.
"""

from __future__ import annotations

import io
import math
import re
import time
from collections import Counter
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

from sidecars.metrics_proxy.exposition import (
    LABEL_NAME,
    METRIC_NAME,
    Family,
    Format,
    Labels,
    Sample,
    render,
)

OPENMETRICS_TYPE = "application/openmetrics-text"
# Preferred first: the text format keeps counters without _total as they are.
UPSTREAM_ACCEPT = (
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
)

_TYPE_LINE = re.compile(rb"^\s*#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)


class ExpositionError(ValueError):
    """An upstream body is not valid exposition text; the message says why."""


def _is_openmetrics(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == OPENMETRICS_TYPE


def _timestamp(value: Any) -> float | None:
    return None if value is None else float(value)


class _Builder:
    """Turns parsed samples into ours, with the prefix and the extra labels applied in the same
    pass (one copy of an upstream's series, not one per step). Names and label pairs repeat on
    every line of a large body; each distinct one is kept once. With ``canonical`` a series'
    labels are sorted by name, so that one series has one spelling (``unique_series``)."""

    def __init__(self, prefix: str = "", extra: Labels = (), canonical: bool = False) -> None:
        self.prefix = prefix
        self.extra = extra
        self.canonical = canonical
        self._extra_names = {name for name, _ in extra}
        self._names: dict[str, str] = {}
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def name(self, name: str) -> str:
        full = self.prefix + name
        return self._names.setdefault(full, full)

    def labels(self, own: dict[str, str]) -> Labels:
        pairs = self._pairs
        if self._extra_names & own.keys():
            # A series' own label named like an added one is kept as exported_<name>, as
            # add_labels does (and Prometheus with target labels).
            own = {(f"exported_{k}" if k in self._extra_names else k): v for k, v in own.items()}
        result = []
        for pair in own.items():
            kept = pairs.get(pair)
            if kept is None:
                kept = pairs[pair] = pair
            result.append(kept)
        result += self.extra
        if self.canonical:
            result.sort()
        return tuple(result)


_PLAIN = _Builder()


def convert_metric(
    metric: Any,
    plain_counters: Set[str] = frozenset(),
    builder: _Builder = _PLAIN,
    *,
    take: bool = False,
) -> Family | None:
    """prometheus_client's Metric -> Family; ``None`` for a type we cannot re-expose.

    With ``take`` (a metric just parsed, nobody else's) its samples are taken out of it as they
    are converted, from the end, which is cheap for a list: a large family is not held twice."""
    kind, name = metric.type, metric.name
    if kind not in _KINDS:
        return None  # gaugehistogram: no text-format equivalent
    restore = kind == "counter" and name in plain_counters
    parsed = metric.samples if take else list(metric.samples)
    converted = []
    while parsed:
        s = parsed.pop()
        converted.append(
            Sample(
                # The text parser renames a counter ``foo``'s samples to ``foo_total``; undo
                # that so the upstream's series keep their names.
                builder.name(name if restore and s.name == name + "_total" else s.name),
                builder.labels(s.labels),
                float(s.value),
                _timestamp(s.timestamp),
            )
        )
    converted.reverse()
    samples = tuple(converted)
    del converted
    doc = metric.documentation
    if kind == "counter":
        return Family(builder.name(name if restore else name + "_total"), "counter", doc, samples)
    if kind == "info":
        return Family(builder.name(name + "_info"), "gauge", doc, samples)
    return Family(builder.name(name), _KINDS[kind], doc, samples)


# prometheus_client's types -> ours
_KINDS = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "untyped": "untyped",
    "unknown": "untyped",
    "info": "gauge",
    "stateset": "gauge",
}


def _validate(family: Family) -> None:
    for name in (family.name, *(s.name for s in family.samples)):
        if not METRIC_NAME.match(name):
            raise ExpositionError(f"invalid metric name {name!r}")
    for sample in family.samples:
        for label, _ in sample.labels:
            if not LABEL_NAME.match(label) or label.startswith("__"):
                raise ExpositionError(f"invalid label name {label!r} on {sample.name}")


def _series_key(sample: Sample) -> tuple[str, Labels]:
    return sample.name, tuple(sorted(sample.labels))


def _group(labels: Labels, drop: str) -> Labels:
    return tuple(sorted(pair for pair in labels if pair[0] != drop))


def _counter_valid(family: Family) -> bool:
    """Sure to be valid OpenMetrics: one sample per series, none negative or NaN."""
    return all(s.name == family.name and s.value >= 0 for s in family.samples)


def _histogram_valid(family: Family) -> bool:
    """Sure to be valid OpenMetrics: each series' buckets together, ordered by a numeric
    ``le`` ending at +Inf, cumulative whole counts, _count equal to the +Inf bucket and given
    with _sum. Anything unusual (negative buckets, _created, odd spellings) answers False and
    is left to the parser."""
    bucket, count_name, sum_name = (family.name + s for s in ("_bucket", "_count", "_sum"))
    seen: set[Labels] = set()
    group: Labels | None = None
    last_le = last_value = count = 0.0
    started = has_sum = has_count = False

    def complete() -> bool:
        return (
            last_le == math.inf and has_sum == has_count and (not has_count or count == last_value)
        )

    for s in family.samples:
        if not s.value >= 0:  # negative or NaN
            return False
        le = next((v for k, v in s.labels if k == "le"), None)
        if s.name == bucket:
            if le is None:
                return False
        elif s.name not in (count_name, sum_name) or le is not None:
            return False
        key = _group(s.labels, "le")
        if key != group:
            if group is not None and not complete():
                return False
            if key in seen:
                return False
            seen.add(key)
            group, last_le, last_value, count = key, -1.0, 0.0, 0.0
            started = has_sum = has_count = False
        if s.name == bucket:
            try:
                bound = float(le)  # type: ignore[arg-type]
            except ValueError:
                return False
            if bound != bound or (bound == math.inf and le != "+Inf") or bound < 0:
                return False
            if (started and bound <= last_le) or s.value < last_value:
                return False
            if not s.value.is_integer():
                return False
            started, last_le, last_value = True, bound, s.value
        elif s.name == count_name:
            if not s.value.is_integer():
                return False
            has_count, count = True, s.value
        else:
            has_sum = True
    return group is None or complete()


def openmetrics_error(family: Family) -> str | None:
    """Why ``family`` would make our OpenMetrics output invalid, or None. Its series must be
    distinct (``unique_series``) and its label names valid (``_validate``).

    The text format lets through what OpenMetrics refuses (a histogram without its +Inf
    bucket, a non-numeric ``le`` or ``quantile``, a negative counter, a timestamp on some
    samples of a group only); Prometheus refuses a whole scrape for one such family, our nginx
    metrics with it. prometheus_client's strict OpenMetrics parser decides, reading the family
    rendered alone. The common shapes that are valid for sure (gauges, untyped and counters
    whose samples all carry the family's name, well-formed histograms; no timestamps) are
    recognised first at a fraction of its cost, which is most of the CPU of merging a large
    body otherwise."""
    if all(s.timestamp is None for s in family.samples):
        if family.type in ("gauge", "untyped") and all(
            s.name == family.name for s in family.samples
        ):
            return None
        if family.type == "counter" and _counter_valid(family):
            return None
        if family.type == "histogram" and _histogram_valid(family):
            return None
    text = render([family], Format.OPENMETRICS).decode()
    try:
        for _ in om_parser.text_string_to_metric_families(text):
            pass
    except Exception as exc:  # the parser's assorted types, as for parse_exposition
        return _first_line(exc)
    return None


def unique_series(family: Family) -> tuple[Family, int]:
    """``family`` without its repeated series (the first kept), and how many there were. Its
    labels must be in one order (``_Builder(canonical=True)``)."""
    seen: set[tuple[str, Labels]] = set()
    kept = []
    for sample in family.samples:
        key = (sample.name, sample.labels)
        if key not in seen:
            seen.add(key)
            kept.append(sample)
    dropped = len(family.samples) - len(kept)
    if not dropped:
        return family, 0
    return Family(family.name, family.type, family.help, tuple(kept)), dropped


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@dataclass
class Parsed:
    families: list[Family]
    unsupported: int = 0  # series of types the text format cannot carry
    duplicates: int = 0  # series seen twice in the body (the first is kept)
    invalid: int = 0  # series of families OpenMetrics would refuse (see openmetrics_error)
    invalid_detail: str = ""  # why the first of them was left out


def _lines(body: bytes) -> io.TextIOWrapper:
    # Decoded as it is read: no second copy of a large body as one str.
    return io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline="\n")


def parse_exposition(
    body: bytes,
    content_type: str,
    *,
    prefix: str = "",
    labels: Labels = (),
    deadline: float | None = None,
) -> Parsed:
    """An upstream's body as families, ``prefix`` on every name and ``labels`` on every
    series. Raises ExpositionError for a body that is not valid exposition text, and
    TimeoutError once ``time.monotonic()`` passes ``deadline`` (checked between families)."""
    openmetrics = _is_openmetrics(content_type)
    if not openmetrics and body and not body.endswith(b"\n"):
        # The format requires a final newline; its absence is how a cut-off body shows.
        raise ExpositionError("body does not end with a newline (truncated?)")
    plain_counters: set[str] = set()
    if not openmetrics:
        plain_counters = {
            n.decode("utf-8", "replace")
            for n in _TYPE_LINE.findall(body)
            if not n.endswith(b"_total")
        }
    parse = (
        om_parser.text_fd_to_metric_families
        if openmetrics
        else text_parser.text_fd_to_metric_families
    )
    builder = _Builder(prefix, labels, canonical=True)
    parsed = Parsed([])
    kind = "OpenMetrics" if openmetrics else "text"
    try:
        for metric in parse(_lines(body)):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("parsing the body took past the deadline")
            unsupported = max(1, len(metric.samples))
            family = convert_metric(metric, plain_counters, builder, take=True)
            if family is None:
                parsed.unsupported += unsupported
                continue
            _validate(family)
            family, repeated = unique_series(family)
            parsed.duplicates += repeated
            error = openmetrics_error(family)
            if error is not None:
                parsed.invalid += max(1, len(family.samples))
                parsed.invalid_detail = parsed.invalid_detail or f"{family.name}: {error}"
                continue
            parsed.families.append(family)
    except (ExpositionError, TimeoutError):
        raise
    except UnicodeDecodeError:
        raise ExpositionError("body is not UTF-8") from None
    # prometheus_client's parsers raise assorted types (ValueError, IndexError, TypeError...)
    # on hostile input; any of them means "not valid exposition text".
    except Exception as exc:
        raise ExpositionError(f"invalid {kind} exposition: {_first_line(exc)}") from None
    return parsed


@dataclass
class Merged:
    families: list[Family]
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, reason)


def merge(own: Sequence[Family], upstreams: Sequence[tuple[str, Sequence[Family]]]) -> Merged:
    """Our families, then the upstreams'. A family of one upstream is taken as it is (its
    series are distinct: ``parse_exposition``); only where several contribute to one family
    are series compared, so a large single upstream costs no set of every series."""
    result = Merged(list(own))
    reserved: set[str] = set()
    for family in own:
        reserved |= family.claimed_names()
    claimed: dict[str, str] = {}  # name -> the text name of the upstream family claiming it
    building: dict[str, _Building] = {}
    order: list[str] = []
    for source, families in upstreams:
        for family in families:
            names = family.claimed_names()
            owners = {claimed[n] for n in names if n in claimed}
            compatible = owners == {family.name} and building[family.name].first.type == family.type
            if names & reserved or (owners and not compatible):
                result.dropped[(source, "name_collision")] += max(1, len(family.samples))
                continue
            for name in names:
                claimed[name] = family.name
            if family.name not in building:
                building[family.name] = _Building(family)
                order.append(family.name)
                continue
            built = building[family.name]
            if built.seen is None:
                built.seen = {_series_key(sample) for part in built.parts for sample in part}
            kept = []
            for sample in family.samples:
                key = _series_key(sample)
                if key in built.seen:
                    result.dropped[(source, "duplicate_series")] += 1
                    continue
                built.seen.add(key)
                kept.append(sample)
            built.parts.append(tuple(kept))
    for name in order:
        built = building[name]
        first = built.first
        if len(built.parts) == 1:
            result.families.append(first)
            continue
        samples = tuple(sample for part in built.parts for sample in part)
        result.families.append(Family(first.name, first.type, first.help, samples))
    return result


@dataclass
class _Building:
    """A merged family being put together from the upstreams that have it."""

    first: Family
    parts: list[tuple[Sample, ...]] = field(default_factory=list)
    seen: set[tuple[str, Labels]] | None = None  # made once a second part comes

    def __post_init__(self) -> None:
        self.parts.append(self.first.samples)
