"""The metrics-proxy's own families (stub_status, access log, its telemetry, the registry's),
rendered for a scrape without building them each time.

Each source keeps a layout that seldom changes: stub_status and the telemetry are rendered from
a ``Template`` (rebuilt when their layout changes), so a scrape only formats their numbers; the
access-log families change only when lines arrive and the registry's hardly ever, so their
rendering is kept until they do. Every number is read when the scrape's round collects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.collector import stub_status_families, stub_status_values
from sidecars.metrics_proxy.exposition import Family, Format, Labels, add_labels
from sidecars.metrics_proxy.merge import convert_metric
from sidecars.metrics_proxy.stub_status import StubStatus
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.metrics_proxy.template import Block, Template

T = TypeVar("T")
_NOTHING = object()  # the key of nothing built yet: equal to no source's key


def registry_families(metrics: Sequence[Metric]) -> list[Family]:
    families = []
    for metric in metrics:
        family = convert_metric(metric)
        if family is not None:
            families.append(family)
    return families


class _Kept(Generic[T]):
    """What ``build`` made, kept for as long as its source's key stays the same."""

    __slots__ = ("key", "value")

    def __init__(self) -> None:
        self.key: object = _NOTHING
        self.value: T | None = None

    def get(self, key: object, build: Callable[[], T]) -> T:
        if self.value is None or key != self.key:
            self.value = build()
            self.key = key
        return self.value


Part = tuple[Template, Sequence[float]] | Block


class OwnParts:
    """One round's own families as parts of a body, each rendered when a format is asked."""

    __slots__ = ("_bodies", "parts")

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = parts
        self._bodies: dict[Format, bytes] = {}

    def render(self, fmt: Format) -> bytes:
        body = self._bodies.get(fmt)
        if body is None:
            pieces = [
                part.render(fmt) if isinstance(part, Block) else part[0].render(part[1], fmt)
                for part in self.parts
            ]
            if fmt is Format.OPENMETRICS:
                pieces.append(b"# EOF\n")
            body = self._bodies[fmt] = b"".join(pieces)
        return body


class OwnMetrics:
    def __init__(
        self,
        *,
        telemetry: Telemetry,
        registry: CollectorRegistry,
        access_log: AccessLogMetrics | None = None,
        const_labels: Labels = (),
    ) -> None:
        self.telemetry = telemetry
        self.registry = registry
        self.access_log = access_log
        self.const_labels = const_labels
        self._stub: _Kept[Template] = _Kept()
        self._telemetry: _Kept[Template] = _Kept()
        self._access: _Kept[Block] = _Kept()
        self._registry: _Kept[Block] = _Kept()

    def _labelled(self, families: Sequence[Family]) -> list[Family]:
        return [add_labels(family, self.const_labels) for family in families]

    def families(self, status: StubStatus | None) -> list[Family]:
        """As families: for a merge with upstreams (and to check ``parts`` against)."""
        own = stub_status_families(status)
        if self.access_log is not None:
            own += self.access_log.families()
        own += self.telemetry.families()
        own += registry_families(list(self.registry.collect()))
        return self._labelled(own)

    def parts(self, status: StubStatus | None) -> OwnParts:
        """The same families as ``families(status)``, as parts of a body."""
        stub = self._stub.get(
            status is None, lambda: Template(self._labelled(stub_status_families(status)))
        )
        parts: list[Part] = [(stub, stub_status_values(status))]
        access = self.access_log
        if access is not None:
            key = (access.parsed, access.unparsed, access.logged)
            parts.append(self._access.get(key, lambda: Block(self._labelled(access.families()))))
        telemetry = self.telemetry
        template = self._telemetry.get(
            telemetry.layout(), lambda: Template(self._labelled(telemetry.families()))
        )
        parts.append((template, telemetry.values()))
        metrics = list(self.registry.collect())
        parts.append(
            self._registry.get(metrics, lambda: Block(self._labelled(registry_families(metrics))))
        )
        return OwnParts(parts)
