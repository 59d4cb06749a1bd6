"""Counts from the real access log: where reading starts, hostile lines, rotation, labels."""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable

import pytest

from tests.integration.metrics_proxy.conftest import Site
from tests.integration.metrics_proxy.proxy import Proxy, Series
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration


def send(site: Site, path: str, count: int, method: str = "GET") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        for _ in range(count):
            conn.request(method, path)
            conn.getresponse().read()
    finally:
        conn.close()


def responses(series: Series) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["status"], dict(labels)["method"]): value
        for (name, labels), value in series.items()
        if name == "nginx_http_responses_total"
    }


def lines(series: Series, result: str) -> float:
    return series[("metrics_proxy_access_log_lines_total", frozenset({("result", result)}))]


def start(proxies: Callable[..., Proxy], site: Site, *args: str) -> Proxy:
    return proxies(
        "--stub-status-url", site.stub_status_url, "--access-log", str(site.access_log), *args
    ).wait_ready()


def wait_for(proxy: Proxy, expected: dict[tuple[str, str], float]) -> Series:
    def reached() -> Series | None:
        series = proxy.scrape()
        return series if responses(series) == expected else None

    try:
        return wait_until(reached, timeout=10, what=f"responses {expected}")
    except AssertionError:
        raise AssertionError(f"expected {expected}, have {responses(proxy.scrape())}") from None


def test_start_at_end_skips_history_beginning_reads_it(
    nginx: Site, proxies: Callable[..., Proxy]
) -> None:
    send(nginx, "/", 4)
    wait_until(lambda: nginx.access_log.stat().st_size > 0, what="history in the access log")
    at_end = start(proxies, nginx)
    at_beginning = start(proxies, nginx, "--access-log-start", "beginning")
    send(nginx, "/missing", 2)
    wait_for(at_end, {("404", "GET"): 2})
    wait_for(at_beginning, {("200", "GET"): 4, ("404", "GET"): 2})


def test_log_created_after_start(site: Site, proxies: Callable[..., Proxy]) -> None:
    assert not site.access_log.exists()
    proxy = start(proxies, site)
    site.start()
    send(site, "/", 3)
    wait_for(proxy, {("200", "GET"): 3})


def test_hostile_lines_are_counted_as_unparsed(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    proxy = start(proxies, nginx)
    with open(nginx.access_log, "ab") as log:
        log.write(b"garbage that is no access-log line\n")
        log.write(b"\xff\xfe\x00\x01 binary \xc3\x28 invalid utf-8\n")
        log.write(b"x" * 100_000 + b"\n")  # longer than the tailer's line limit: split
    send(nginx, "/", 5)
    series = wait_for(proxy, {("200", "GET"): 5})
    assert lines(series, "unparsed") >= 3
    assert lines(series, "counted") == 5
    assert proxy.proc.popen.poll() is None


def test_rotation_loses_nothing(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    proxy = start(proxies, nginx)
    send(nginx, "/", 10)
    wait_for(proxy, {("200", "GET"): 10})
    os.rename(nginx.access_log, nginx.access_log.with_name("access.log.1"))
    send(nginx, "/", 5)  # still written to the renamed file until nginx reopens
    nginx.app.reopen_logs()
    wait_until(nginx.access_log.exists, what="nginx reopened its access log")
    send(nginx, "/missing", 3)
    wait_for(proxy, {("200", "GET"): 15, ("404", "GET"): 3})


def test_status_classes_and_upstream_times(nginx: Site, proxies: Callable[..., Proxy]) -> None:
    proxy = start(proxies, nginx, "--status-label", "class", "--upstream-buckets", "0.5,5")
    send(nginx, "/", 2)
    send(nginx, "/proxied", 3)  # 200 through proxy_pass: upstream time logged
    send(nginx, "/fail", 1)
    send(nginx, "/api/submit", 2, method="POST")
    send(nginx, "/", 1, method="DELETE")  # 405 from the static handler
    # /proxied goes back to this nginx, which logs that inner request too: 2 + 3 + 3 GETs.
    series = wait_for(
        proxy, {("2xx", "GET"): 8, ("2xx", "POST"): 2, ("5xx", "GET"): 1, ("4xx", "DELETE"): 1}
    )
    name = "nginx_http_upstream_response_duration_seconds"
    assert series[(name + "_count", frozenset())] == 3
    assert series[(name + "_bucket", frozenset({("le", "+Inf")}))] == 3
    assert series[("nginx_http_request_duration_seconds_count", frozenset())] == 12
