"""A stock nginx (`access_log PATH;`: nginx's built-in combined) and the log-shipper with no
format set: access-log lines arrive with their parsed fields, error-log lines raw, and nothing
is counted as unparsed or warned about."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.log_shipper.conftest import Site
from tests.integration.log_shipper.load import id_of, request_ids
from tests.integration.log_shipper.shipper import Shipper
from tests.support.nginx import APPS, AppNginx, have_nginx
from tests.support.procs import free_port, http_get, port_open, wait_until

pytestmark = pytest.mark.integration

N = 500


def start_site(root: Path, access_format: str) -> Site:
    """The app nginx with the demo site; ``access_format`` "" is a stock `access_log PATH;`."""
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    app = AppNginx(root, access_format=access_format)
    port = free_port()
    conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    conf = conf.replace("${NGINX_PORT}", f"127.0.0.1:{port}").replace(
        "${SITE_DIR}", str(app.site_dir)
    )
    (app.site_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "html").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "conf.d" / "site.conf").write_text(conf)
    (app.site_dir / "html" / "index.html").write_text("hello\n")
    app.start()
    wait_until(lambda: port_open(port), timeout=10, what="site port")
    return Site(app, port)


@pytest.fixture
def stock(tmp_path: Path) -> Iterator[Site]:
    site = start_site(tmp_path / "nginx", "")
    try:
        yield site
    finally:
        site.app.stop()


def test_stock_combined_lines_are_shipped_with_fields_by_default(
    tmp_path, stock, receiver, shippers
):
    logs = stock.app.log_dir
    shipper = Shipper(
        tmp_path / "shipper",
        "--paths", str(logs / "access.log"),
        "--paths", str(logs / "error.log"),
        "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    request_ids(stock.port, range(N))
    # A missing file: one 404 in the access log, and an error-log line.
    assert http_get(stock.url("/missing.png"))[0] == 404

    def access() -> list[dict]:
        return [
            x for x in receiver.lines() if x["file"].endswith("access.log") and id_of(x["line"])
            is not None
        ]

    wait_until(lambda: len(access()) >= N, timeout=60, what=f"{N} access-log lines")
    wait_until(
        lambda: any(x["file"].endswith("error.log") for x in receiver.lines()),
        timeout=30,
        what="the error-log line",
    )
    got = access()
    assert sorted(id_of(x["line"]) for x in got) == list(range(N))
    for entry in got:
        fields = entry["fields"]
        assert fields is not None, entry["line"]
        assert fields["status"] == "200" and fields["request"].startswith("GET /?id=")
        assert fields["remote_addr"] == "127.0.0.1" and int(fields["body_bytes_sent"]) > 0
        assert "request_time" not in fields  # combined, not the sidecars format
    errors = [x for x in receiver.lines() if x["file"].endswith("error.log")]
    assert errors and all(x["fields"] is None for x in errors)  # nginx's messages, raw
    assert shipper.metric("log_shipper_unparsed_lines_total") == 0
    logged = [json.loads(x) for x in shipper.output().splitlines() if x.startswith("{")]
    detected = {x["path"]: x["format"] for x in logged if x["msg"] == "log format detected"}
    assert detected == {
        str(logs / "access.log"): "combined",
        str(logs / "error.log"): "nginx-error-log",
    }
    assert not [x for x in logged if x["level"] == "warning"], "no warning for a stock nginx"
    assert shipper.terminate() == 0


def test_lines_of_an_unknown_format_are_counted_and_logged_once(tmp_path, receiver, shippers):
    log = tmp_path / "custom.log"
    log.write_text("".join(f"custom|200|GET /{i}\n" for i in range(50)))
    shipper = Shipper(
        tmp_path / "shipper", "--paths", str(log), "--sink", f"http={receiver.url}",
        "--batch-wait", "200ms",
    )  # fmt: skip
    shippers.append(shipper.start())
    wait_until(lambda: len(receiver.lines()) >= 50, timeout=30, what="50 lines")
    assert all(x["fields"] is None for x in receiver.lines())
    assert shipper.metric("log_shipper_unparsed_lines_total") == 50
    logged = [json.loads(x) for x in shipper.output().splitlines() if x.startswith("{")]
    warnings = [x for x in logged if x["level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["sample"] == "custom|200|GET /0" and warnings[0]["path"] == str(log)
    assert "LOG_SHIPPER_LOG_FORMAT" in warnings[0]["fix"]
