"""What stub_status cannot tell, counted from parsed access-log lines (pure logic, no I/O).

Cardinality is bounded by construction: labels are only the status (a code 100-599 or its
class) and the method (the nine standard ones, everything else folded into ``other``); paths,
client addresses and user agents never become labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from sidecars.metrics_proxy.exposition import Family, Labels, Sample
from sidecars.metrics_proxy.histogram import Histogram
from sidecars.runtime import nginx_log

METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]
)
OTHER = "other"
_UNKNOWN = object()
_LABEL_CACHE = 4096

RESPONSES = "nginx_http_responses_total"
BODY_BYTES = "nginx_http_response_body_bytes_total"
DURATION = "nginx_http_request_duration_seconds"
UPSTREAM = "nginx_http_upstream_response_duration_seconds"
LINES = "metrics_proxy_access_log_lines_total"
# The variables observe() reads (the method comes from $request_method, else $request), in the
# order count() takes them (log_parsing's one-pass scan captures just these).
COUNT_ORDER = (
    "status",
    "request_method",
    "request",
    "body_bytes_sent",
    "request_time",
    "upstream_response_time",
)
NEEDED = frozenset(COUNT_ORDER)
# family -> the nginx variable it is built from
_NEEDS = {
    BODY_BYTES: "body_bytes_sent",
    DURATION: "request_time",
    UPSTREAM: "upstream_response_time",
}


def status_value(code: int | None, mode: str) -> str:
    if code is None or not 100 <= code <= 599:
        return OTHER
    return f"{code // 100}xx" if mode == "class" else str(code)


def method_value(method: str | None) -> str:
    return method if method in METHODS else OTHER


class AccessLogMetrics:
    def __init__(
        self,
        *,
        status_label: str = "code",
        duration_buckets: Sequence[float],
        upstream_buckets: Sequence[float],
        logged: Collection[str] | None = None,
    ) -> None:
        """``logged``: the variables the log format writes (None: not known, as for JSON
        lines); families built from a variable it lacks are left out."""
        self.status_label = status_label
        self.responses: Counter[Labels] = Counter()
        self.body_bytes: Counter[Labels] = Counter()
        self.duration = Histogram(tuple(duration_buckets))
        self.upstream = Histogram(tuple(upstream_buckets))
        self.logged = None if logged is None else frozenset(logged)
        self.unparsed = 0
        self.parsed = 0
        # (raw $status, raw method) -> label set: a busy log repeats a handful of pairs, and
        # validating and building them once per pair halves the cost of a line. Bounded, since
        # a raw method can be anything a client sends.
        self._labels: dict[tuple[str | None, str | None], Labels | None] = {}

    def _labels_for(self, status: str | None, method: str | None) -> Labels | None:
        key = (status, method)
        labels = self._labels.get(key, _UNKNOWN)
        if labels is _UNKNOWN:
            code = nginx_log.int_of(status) if status is not None and len(status) == 3 else None
            labels = None
            if code is not None:
                labels = (
                    ("status", status_value(code, self.status_label)),
                    ("method", method_value(method)),
                )
            if len(self._labels) < _LABEL_CACHE:
                self._labels[key] = labels
        return labels  # type: ignore[return-value]

    def observe(self, fields: Mapping[str, str] | None) -> bool:
        """Count one line's fields (``None``: the line did not parse). False when the line
        could not be counted as a response."""
        if fields is None:
            self.unparsed += 1
            return False
        get = fields.get
        return self.count(
            get("status"),
            nginx_log.method(fields),
            get("body_bytes_sent"),
            get("request_time"),
            get("upstream_response_time"),
        )

    def count(
        self,
        status: str | None,
        method: str | None,
        body_bytes_sent: str | None,
        request_time: str | None,
        upstream_response_time: str | None,
    ) -> bool:
        """``observe()`` from the values it reads (None: not in the format), as a scan of a
        few fields finds them."""
        labels = self._labels_for(status, method)
        if labels is None:
            self.unparsed += 1
            return False
        self.parsed += 1
        self.responses[labels] += 1
        if body_bytes_sent is not None:
            sent = nginx_log.int_of(body_bytes_sent)
            if sent is not None:
                self.body_bytes[labels] += sent
        if request_time is not None:
            seconds = nginx_log.seconds_of(request_time)
            if seconds is not None:
                self.duration.observe(seconds)
        if upstream_response_time and upstream_response_time != "-":
            upstream = nginx_log.upstream_times_of(upstream_response_time)
            if upstream:
                self.upstream.observe(sum(upstream))
        return True

    def families(self) -> list[Family]:
        def counter(name: str, help_text: str, values: Counter[Labels]) -> Family:
            samples = tuple(Sample(name, labels, float(n)) for labels, n in sorted(values.items()))
            return Family(name, "counter", help_text, samples)

        lines: Counter[Labels] = Counter(
            {(("result", "counted"),): self.parsed, (("result", "unparsed"),): self.unparsed}
        )
        families = [
            counter(
                LINES,
                "Access-log lines read, by result (counted, unparsed: did not match the "
                "log format or had no status)",
                lines,
            ),
            counter(
                RESPONSES,
                "Responses by status and method, counted from the access log",
                self.responses,
            ),
            counter(
                BODY_BYTES,
                "Response body bytes sent ($body_bytes_sent) by status and method, "
                "from the access log",
                self.body_bytes,
            ),
            Family(
                DURATION,
                "histogram",
                "Request processing time ($request_time) in seconds, from the access log",
                tuple(self.duration.samples(DURATION)),
            ),
            Family(
                UPSTREAM,
                "histogram",
                "Upstream response time ($upstream_response_time, summed over the servers "
                "tried) in seconds, from the access log",
                tuple(self.upstream.samples(UPSTREAM)),
            ),
        ]
        if self.logged is None:
            return families
        # A format that does not log a field gets no family that would stay empty forever.
        return [f for f in families if _NEEDS.get(f.name, "status") in self.logged]
