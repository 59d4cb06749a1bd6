"""Upstream ``/metrics`` bodies parsed into families, renamed, and merged with our own.

Parsing uses prometheus_client's parsers (text and OpenMetrics). An upstream body that does not
parse is rejected whole: serving half of it would make series vanish and reappear between
scrapes. Merging keeps our own families untouched, merges same-named families of the same type
from several upstreams, and drops what Prometheus would reject (a name claimed twice, a series
twice), counting every dropped series by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

from sidecars.metrics_proxy.exposition import (
    LABEL_NAME,
    METRIC_NAME,
    Family,
    Labels,
    Sample,
    add_labels,
)

OPENMETRICS_TYPE = "application/openmetrics-text"
# Preferred first: the text format keeps counters without _total as they are.
UPSTREAM_ACCEPT = (
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
)

_TYPE_LINE = re.compile(r"^\s*#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)


class ExpositionError(ValueError):
    """An upstream body is not valid exposition text; the message says why."""


def _is_openmetrics(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == OPENMETRICS_TYPE


def _timestamp(value: Any) -> float | None:
    return None if value is None else float(value)


def convert_metric(metric: Any, plain_counters: Set[str] = frozenset()) -> Family | None:
    """prometheus_client's Metric -> Family; ``None`` for a type we cannot re-expose."""
    samples = tuple(
        Sample(s.name, tuple(s.labels.items()), float(s.value), _timestamp(s.timestamp))
        for s in metric.samples
    )
    kind, name = metric.type, metric.name
    if kind == "counter":
        if name in plain_counters:
            # The text parser renames a counter ``foo``'s samples to ``foo_total``; undo that
            # so the upstream's series keep their names.
            samples = tuple(
                Sample(name, s.labels, s.value, s.timestamp) if s.name == name + "_total" else s
                for s in samples
            )
            return Family(name, "counter", metric.documentation, samples)
        return Family(name + "_total", "counter", metric.documentation, samples)
    if kind in ("gauge", "histogram", "summary"):
        return Family(name, kind, metric.documentation, samples)
    if kind in ("untyped", "unknown"):
        return Family(name, "untyped", metric.documentation, samples)
    if kind == "info":
        return Family(name + "_info", "gauge", metric.documentation, samples)
    if kind == "stateset":
        return Family(name, "gauge", metric.documentation, samples)
    return None  # gaugehistogram: no text-format equivalent


def _validate(family: Family) -> None:
    for name in (family.name, *(s.name for s in family.samples)):
        if not METRIC_NAME.match(name):
            raise ExpositionError(f"invalid metric name {name!r}")
    for sample in family.samples:
        for label, _ in sample.labels:
            if not LABEL_NAME.match(label) or label.startswith("__"):
                raise ExpositionError(f"invalid label name {label!r} on {sample.name}")


@dataclass
class Parsed:
    families: list[Family]
    unsupported: int = 0  # series of types the text format cannot carry


def parse_exposition(body: bytes, content_type: str) -> Parsed:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExpositionError(f"body is not UTF-8 (byte {exc.start})") from None
    openmetrics = _is_openmetrics(content_type)
    if not openmetrics and text and not text.endswith("\n"):
        # The format requires a final newline; its absence is how a cut-off body shows.
        raise ExpositionError("body does not end with a newline (truncated?)")
    plain_counters = set()
    if not openmetrics:
        plain_counters = {n for n in _TYPE_LINE.findall(text) if not n.endswith("_total")}
    parse = (
        om_parser.text_string_to_metric_families
        if openmetrics
        else (text_parser.text_string_to_metric_families)
    )
    try:
        metrics = list(parse(text))
    # prometheus_client's parsers raise assorted types (ValueError, IndexError, TypeError...)
    # on hostile input; any of them means "not valid exposition text".
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        kind = "OpenMetrics" if openmetrics else "text"
        raise ExpositionError(f"invalid {kind} exposition: {detail}") from None
    parsed = Parsed([])
    for metric in metrics:
        family = convert_metric(metric, plain_counters)
        if family is None:
            parsed.unsupported += max(1, len(metric.samples))
            continue
        _validate(family)
        parsed.families.append(family)
    return parsed


def rename(families: Iterable[Family], prefix: str, label: Labels) -> list[Family]:
    """Prefix every name and add ``label`` to every series of an upstream's families."""
    result = []
    for family in families:
        if prefix:
            samples = tuple(
                Sample(prefix + s.name, s.labels, s.value, s.timestamp) for s in family.samples
            )
            family = Family(prefix + family.name, family.type, family.help, samples)
        result.append(add_labels(family, label))
    return result


def _series_key(sample: Sample) -> tuple[str, Labels]:
    return sample.name, tuple(sorted(sample.labels))


@dataclass
class Merged:
    families: list[Family]
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, reason)


def merge(own: Sequence[Family], upstreams: Sequence[tuple[str, Sequence[Family]]]) -> Merged:
    result = Merged(list(own))
    reserved: set[str] = set()
    for family in own:
        reserved |= family.claimed_names()
    claimed: dict[str, str] = {}  # name -> the text name of the upstream family claiming it
    building: dict[str, tuple[Family, list[Sample], set[tuple[str, Labels]]]] = {}
    order: list[str] = []
    for source, families in upstreams:
        for family in families:
            names = family.claimed_names()
            owners = {claimed[n] for n in names if n in claimed}
            compatible = owners == {family.name} and building[family.name][0].type == family.type
            if names & reserved or (owners and not compatible):
                result.dropped[(source, "name_collision")] += max(1, len(family.samples))
                continue
            if family.name not in building:
                building[family.name] = (family, [], set())
                order.append(family.name)
            for name in names:
                claimed[name] = family.name
            _, samples, seen = building[family.name]
            for sample in family.samples:
                key = _series_key(sample)
                if key in seen:
                    result.dropped[(source, "duplicate_series")] += 1
                    continue
                seen.add(key)
                samples.append(sample)
    for name in order:
        first, samples, _ = building[name]
        result.families.append(Family(first.name, first.type, first.help, tuple(samples)))
    return result
