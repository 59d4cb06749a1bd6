"""A merged upstream (or stub_status) answering what no sane server does, against the real
process: every such answer is that source's failure alone. /metrics still answers 200 with
``metrics_proxy_upstream_up{upstream="app"} 0`` (or ``nginx_up 0``) and every other family,
/healthz answers, and the log says it once, naming the source and the reason."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from tests.integration.metrics_proxy import fake_upstream as fake
from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.fake_upstream import Behaviour, FakeUpstream
from tests.integration.metrics_proxy.proxy import Proxy, Series
from tests.support.procs import sidecars_cmd, wait_until

pytestmark = pytest.mark.integration

NGINX_SERIES = {
    "nginx_connections_accepted",
    "nginx_connections_active",
    "nginx_connections_handled",
    "nginx_http_requests_total",
}
APP = b"# TYPE jobs_done counter\njobs_done 3\n# TYPE queue_depth gauge\nqueue_depth 5\n"
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def failures(series: Series, source: str) -> dict[str, float]:
    """metrics_proxy_fetch_errors_total of ``source``, by reason."""
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in series.items()
        if name == "metrics_proxy_fetch_errors_total" and dict(labels).get("source") == source
    }


def failure_logs(proxy: Proxy, source: str) -> list[dict[str, str]]:
    lines = []
    for line in proxy.proc.output().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("msg") == "source failed" and entry.get("source") == source:
            lines.append(entry)
    return lines


def raw_answer(data: bytes, hold: threading.Event | None = None) -> Behaviour:
    """Send ``data`` as the whole answer, then close (or keep the connection until ``hold``)."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        try:
            sock.sendall(data)
        except OSError:
            return
        if hold is not None:
            hold.wait(30)

    return behave


def reset_mid_body(declared: int, sent: bytes) -> Behaviour:
    """Part of the body, then a TCP reset (SO_LINGER 0), as a crashing upstream does."""

    def behave(sock: socket.socket, _: FakeUpstream) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {declared}\r\n\r\n"
        sock.sendall(head.encode() + sent)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    return behave


@pytest.fixture
def hold() -> Iterator[threading.Event]:
    """Released at the end of the test, so held connections let the fake stop."""
    event = threading.Event()
    yield event
    event.set()


def start_proxy(
    nginx: Site, proxies: Callable[..., Proxy], server: FakeUpstream, *extra: str
) -> Proxy:
    return proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "app=" + server.url("/metrics"),
        "--merge-max-bytes",
        "1MiB",
        "--merge-timeout",
        "1s",
        *extra,
    ).wait_ready()


def assert_only_the_upstream_failed(proxy: Proxy, reasons: set[str], scrapes: int = 3) -> None:
    for _ in range(scrapes):
        series = proxy.scrape()  # asserts 200
        assert series[key("metrics_proxy_upstream_up", upstream="app")] == 0
        assert series[key("nginx_up")] == 1
        assert {name for name, _ in series} >= NGINX_SERIES
        assert not [name for name, _ in series if name.startswith(("jobs_", "queue_"))]
        assert proxy.get("/healthz")[0] == 200
    counted = failures(proxy.scrape(), "app")
    assert set(counted) <= reasons and sum(counted.values()) >= scrapes, counted
    logged = failure_logs(proxy, "app")
    # One line when the failure starts (another only if its reason changes), not per scrape.
    assert 1 <= len(logged) <= len(reasons), logged
    assert {entry["reason"] for entry in logged} <= reasons
    assert all("app" in entry["source"] for entry in logged)
    assert proxy.proc.popen.poll() is None


HOSTILE = {
    # int() takes the superscript digit that str.isdigit() let through: a ValueError.
    "status-line-superscript": (
        raw_answer(b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n"),
        {"protocol"},
    ),
    "status-line-garbage": (raw_answer(b"HTTP/1.1 OK\r\n\r\n"), {"protocol"}),
    "content-length-superscript": (
        raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx"),
        {"protocol"},
    ),
    "header-without-colon": (
        raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length 3\r\n\r\nabc"),
        {"protocol"},
    ),
    "truncated-body": (fake.truncated(APP[:20], declared=len(APP)), {"truncated"}),
    "truncated-chunked": (
        raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + APP[:20]),
        {"truncated"},
    ),
    "reset-mid-body": (reset_mid_body(len(APP), APP[:20]), {"truncated", "connect"}),
    "over-the-cap": (fake.huge(8 * 1024 * 1024), {"too_large"}),
    "content-length-over-the-cap": (
        raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
        {"too_large"},
    ),
    "invalid-exposition": (fake.answer(b'jobs_done{x="1" 3\n'), {"parse"}),
    "not-utf8": (fake.answer(b'jobs_done{x="\xff"} 3\n'), {"parse"}),
}


@pytest.mark.parametrize(("behaviour", "reasons"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_upstream_is_its_own_failure(
    nginx: Site,
    proxies: Callable[..., Proxy],
    fakes: Callable[..., FakeUpstream],
    behaviour: Behaviour,
    reasons: set[str],
) -> None:
    proxy = start_proxy(nginx, proxies, fakes(behaviour))
    assert_only_the_upstream_failed(proxy, reasons)


def test_stalled_upstream_is_bounded_by_the_merge_timeout(
    nginx: Site,
    proxies: Callable[..., Proxy],
    fakes: Callable[..., FakeUpstream],
    hold: threading.Event,
) -> None:
    # Headers, then nothing: the body never comes.
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    proxy = start_proxy(nginx, proxies, fakes(raw_answer(head, hold)), "--merge-timeout", "300ms")
    started = time.monotonic()
    series = proxy.scrape()
    # Answered at the timeout, not when the upstream gives up (30 s).
    assert time.monotonic() - started < 10
    assert series[key("metrics_proxy_upstream_up", upstream="app")] == 0
    assert_only_the_upstream_failed(proxy, {"timeout"})


def test_negative_chunk_size_neither_freezes_nor_fails_the_scrape(
    nginx: Site,
    proxies: Callable[..., Proxy],
    fakes: Callable[..., FakeUpstream],
    hold: threading.Event,
) -> None:
    """A chunk size of -1 once made the HTTP client loop without awaiting, on the event loop
    of /metrics and /healthz. The fetch runs in the upstream's own thread with a wall-clock
    bound, so even a client that loops is only that upstream's failure ("timeout", then
    "stalled" while its thread is held); a client that refuses the size says "protocol"."""
    body = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = fakes(raw_answer(body + b"-1\r\n" + APP + b"\r\n0\r\n\r\n", hold))
    proxy = start_proxy(nginx, proxies, server, "--merge-timeout", "500ms")
    assert_only_the_upstream_failed(proxy, {"protocol", "timeout", "stalled"})


def test_garbage_stub_status_is_nginx_up_zero(
    proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    # Digits past int()'s 4300-digit limit raise a ValueError of their own.
    page = fake.STUB_STATUS.replace(b" 7 7 9 ", b" " + b"7" * 5000 + b" 7 9 ")
    stub = fakes(fake.answer(page))
    proxy = proxies("--stub-status-url", stub.url("/stub_status")).wait_ready()
    for _ in range(3):
        series = proxy.scrape()
        assert series[key("nginx_up")] == 0
        assert proxy.get("/healthz")[0] == 200
    assert set(failures(proxy.scrape(), "stub_status")) == {"parse"}
    assert len(failure_logs(proxy, "stub_status")) == 1


def test_stub_status_with_a_bad_status_line_is_nginx_up_zero(
    proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    stub = fakes(raw_answer(b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n"))
    proxy = proxies("--stub-status-url", stub.url("/stub_status")).wait_ready()
    for _ in range(3):
        assert proxy.scrape()[key("nginx_up")] == 0
    assert set(failures(proxy.scrape(), "stub_status")) == {"protocol"}
    assert len(failure_logs(proxy, "stub_status")) == 1


# Valid in the text format, refused by OpenMetrics: merged as is, they would make Prometheus
# (which asks for OpenMetrics) refuse the whole scrape, nginx's metrics with it.
OPENMETRICS_INVALID = b"""\
# TYPE latency histogram
latency_bucket{le="0.1"} 1
latency_sum 0.3
latency_count 2
# TYPE errors_total counter
errors_total -4
# TYPE rt summary
rt{quantile="high"} 1
# TYPE queue_depth gauge
queue_depth 5
"""


def test_families_openmetrics_refuses_are_left_out(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    proxy = start_proxy(nginx, proxies, fakes(fake.answer(OPENMETRICS_INVALID)))
    status, body, headers = proxy.get(
        "/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(gzip.decompress(body).decode())}
    assert "queue_depth" in families and "nginx_up" in families
    assert not {"latency", "errors", "errors_total", "rt"} & families.keys()
    series = proxy.scrape()
    assert series[key("metrics_proxy_upstream_up", upstream="app")] == 1
    dropped = key("metrics_proxy_dropped_series_total", upstream="app", reason="invalid")
    assert series[dropped] >= 5
    logged = [line for line in proxy.proc.output().splitlines() if "families left out" in line]
    assert len(logged) == 1 and '"source": "app"' in logged[0]


def test_recovers_when_the_upstream_behaves_again(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    server = fakes(raw_answer(b"HTTP/1.1 \xb200 OK\r\n\r\n"))
    proxy = start_proxy(nginx, proxies, server)
    assert proxy.scrape()[key("metrics_proxy_upstream_up", upstream="app")] == 0
    server.behaviour = fake.answer(APP)
    wait_until(
        lambda: proxy.value("metrics_proxy_upstream_up", upstream="app") == 1,
        timeout=10,
        what="upstream up again",
    )
    assert proxy.scrape()[key("queue_depth")] == 5
    assert '"msg": "source recovered"' in proxy.proc.output()


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def short_series(size: int) -> bytes:
    """The costliest body per byte to merge: one family of the shortest distinct series."""
    lines = [b"# TYPE x gauge\n"]
    total, i = len(lines[0]), 0
    while True:
        line = b'x{i="%x"} 1\n' % i
        if total + len(line) > size:
            return b"".join(lines)
        lines.append(line)
        total += len(line)
        i += 1


def test_largest_accepted_body_fits_the_memory_limit(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    """At the default --merge-max-bytes, the costliest body per byte, scraped in both formats
    with the manifest's const labels, stays well inside the manifest's 128Mi limit."""
    from sidecars.metrics_proxy.settings import MetricsProxySettings

    default = MetricsProxySettings.__dataclass_fields__["merge_max_bytes"].default
    server = fakes(fake.answer(short_series(default)))
    proxy = proxies(
        "--stub-status-url",
        nginx.stub_status_url,
        "--merge-url",
        "app=" + server.url("/metrics"),
        "--merge-timeout",
        "30s",
        "--const-labels",
        "pod=web-0",
        "--const-labels",
        "namespace=default",
    ).wait_ready()
    for accept in (OPENMETRICS, "text/plain", OPENMETRICS):
        status, body, _ = proxy.get(
            "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"}, timeout=60
        )
        assert status == 200
        assert b'x{i="0",namespace="default",pod="web-0"} 1' in gzip.decompress(body)
    assert vm_hwm_kib(proxy.proc.pid) < 110 * 1024  # 128Mi with room


def test_a_body_over_the_cap_costs_no_memory(
    nginx: Site, proxies: Callable[..., Proxy], fakes: Callable[..., FakeUpstream]
) -> None:
    """A never-ending body is refused at the cap, not buffered."""
    proxy = start_proxy(nginx, proxies, fakes(fake.huge(512 * 1024 * 1024)))
    idle = vm_hwm_kib(proxy.proc.pid)
    for _ in range(3):
        assert proxy.scrape()[key("metrics_proxy_upstream_up", upstream="app")] == 0
    assert vm_hwm_kib(proxy.proc.pid) - idle < 16 * 1024


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (("--const-labels", "le=0.5"), {}, "--const-labels (METRICS_PROXY_CONST_LABELS)"),
        ((), {"METRICS_PROXY_CONST_LABELS": "pod=a,quantile=x"}, "METRICS_PROXY_CONST_LABELS"),
        (("--merge-label", "le"), {}, "--merge-label (METRICS_PROXY_MERGE_LABEL)"),
        (("--merge-label", "quantile"), {}, "--merge-label (METRICS_PROXY_MERGE_LABEL)"),
        (("--const-labels", "__name__=x"), {}, "--const-labels (METRICS_PROXY_CONST_LABELS)"),
    ],
    ids=["const-le", "const-quantile-env", "merge-le", "merge-quantile", "const-dunder"],
)
def test_reserved_label_names_are_refused_at_start(
    args: tuple[str, ...], env: dict[str, str], setting: str
) -> None:
    """Taken, ``le`` or ``quantile`` on every series would replace the buckets' and quantiles'
    own (kept as exported_le) and break every histogram and summary served."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_PROXY_")}
    result = subprocess.run(
        sidecars_cmd("metrics-proxy", "--stub-status-url", "http://127.0.0.1:9/stub_status", *args),
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **env},
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert setting in line and "reserved" in line
