"""A stub_status reading as the metric families nginx-prometheus-exporter serves.

Names, types and help texts are the exporter's, byte for byte (checked against Debian's
``prometheus-nginx-exporter`` in tests), so its dashboards and alerts work unchanged.
"""

from __future__ import annotations

from sidecars.metrics_proxy.exposition import Family, Sample
from sidecars.metrics_proxy.stub_status import StubStatus

UP_HELP = "Status of the last metric scrape"

# (metric name, type, help, StubStatus field), in the exporter's order of exposition.
STUB_STATUS_METRICS = (
    ("nginx_connections_accepted", "counter", "Accepted client connections", "accepted"),
    ("nginx_connections_active", "gauge", "Active client connections", "active"),
    ("nginx_connections_handled", "counter", "Handled client connections", "handled"),
    (
        "nginx_connections_reading",
        "gauge",
        "Connections where NGINX is reading the request header",
        "reading",
    ),
    ("nginx_connections_waiting", "gauge", "Idle client connections", "waiting"),
    (
        "nginx_connections_writing",
        "gauge",
        "Connections where NGINX is writing the response back to the client",
        "writing",
    ),
    ("nginx_http_requests_total", "counter", "Total http requests", "requests"),
)


def stub_status_families(status: StubStatus | None) -> list[Family]:
    """``None`` means nginx could not be read: ``nginx_up 0`` and nothing else, as the
    exporter does, so alerts on ``nginx_up == 0`` fire and no stale numbers are served."""
    families = []
    if status is not None:
        for name, kind, help_text, attr in STUB_STATUS_METRICS:
            value = float(getattr(status, attr))
            families.append(Family(name, kind, help_text, (Sample(name, (), value),)))
    up = 1.0 if status is not None else 0.0
    families.append(Family("nginx_up", "gauge", UP_HELP, (Sample("nginx_up", (), up),)))
    return families


def stub_status_values(status: StubStatus | None) -> tuple[int, ...]:
    """The values of ``stub_status_families(status)``'s samples, in their order."""
    if status is None:
        return (0,)
    return (*(getattr(status, attr) for _, _, _, attr in STUB_STATUS_METRICS), 1)
