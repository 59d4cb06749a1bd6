"""Reading a part's /metrics the way Prometheus would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import http_get


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(port: int, name: str, **labels: str) -> float:
    return scrape(port).get((name, frozenset(labels.items())), 0.0)
