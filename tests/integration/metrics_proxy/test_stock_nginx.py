"""A stock nginx (`access_log PATH;`: nginx's built-in combined) and the metrics-proxy with its
default settings: per-status counts are right, not every line "unparsed"; a format it cannot
detect is logged once with a sample and the setting that fixes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.metrics_proxy.conftest import Site, make_site
from tests.integration.metrics_proxy.proxy import Proxy
from tests.integration.metrics_proxy.test_access_log import lines, responses, send, start
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration


def stock_site(root: Path, access_format: str) -> Site:
    site = make_site(root)
    site.app.access_format = access_format
    return site.start()


@pytest.fixture
def stock(tmp_path: Path):
    site = stock_site(tmp_path / "nginx", "")  # nginx's default: combined
    try:
        yield site
    finally:
        site.stop()


def logged(proxy: Proxy) -> list[dict]:
    return [json.loads(x) for x in proxy.proc.output().splitlines() if x.startswith("{")]


def test_stock_combined_log_counted_by_status_with_default_settings(
    stock: Site, proxies: Callable[..., Proxy]
) -> None:
    proxy = start(proxies, stock)  # no --log-format
    send(stock, "/", 7)
    send(stock, "/missing", 3)
    send(stock, "/fail", 2)
    send(stock, "/api/submit", 4, method="POST")
    expected = {("200", "GET"): 7, ("404", "GET"): 3, ("500", "GET"): 2, ("201", "POST"): 4}

    def counted():
        series = proxy.scrape()
        return series if responses(series) == expected else None

    try:
        series = wait_until(counted, timeout=15, what="per-status counts")
    except AssertionError:
        have = responses(proxy.scrape())
        raise AssertionError(f"{have}\n{proxy.proc.output()[-2000:]}") from None
    assert lines(series, "counted") == 16 and lines(series, "unparsed") == 0
    # combined logs $body_bytes_sent, not $request_time: served and left out accordingly.
    names = {name for name, _ in series}
    assert "nginx_http_response_body_bytes_total" in names
    assert "nginx_http_request_duration_seconds_count" not in names
    detected = [x for x in logged(proxy) if x["msg"] == "access log format detected"]
    assert [x["format"] for x in detected] == ["combined"]
    assert not [x for x in logged(proxy) if x["level"] == "warning"]


def test_unknown_format_is_logged_once_with_a_sample_and_the_fix(
    tmp_path: Path, proxies: Callable[..., Proxy]
) -> None:
    site = make_site(tmp_path / "nginx")
    # A custom format nothing can detect: declared at the http level (conf.d/ is included
    # there, custom.conf before site.conf), used by the site's server block.
    conf_d = site.app.site_dir / "conf.d"
    (conf_d / "custom.conf").write_text("log_format custom 'custom|$status|$request';\n")
    server = (conf_d / "site.conf").read_text()
    at = server.index("{") + 1
    directive = f"\n    access_log {site.access_log} custom;\n"
    (conf_d / "site.conf").write_text(server[:at] + directive + server[at:])
    site.start()
    try:
        proxy = start(proxies, site)
        send(site, "/", 30)

        def unparsed():
            series = proxy.scrape()
            return series if lines(series, "unparsed") == 30 else None

        series = wait_until(unparsed, timeout=15, what="30 unparsed lines")
        assert responses(series) == {}
        warnings = [x for x in logged(proxy) if x["level"] == "warning"]
        assert len(warnings) == 1, warnings
        assert warnings[0]["sample"].startswith("custom|200|GET / HTTP/1.1")
        assert "METRICS_PROXY_LOG_FORMAT" in warnings[0]["fix"]
    finally:
        site.stop()
