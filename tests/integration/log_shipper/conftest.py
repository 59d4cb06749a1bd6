"""Fixtures for the log-shipper's integration tests: every process is stopped, also on failure."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.log_shipper.shipper import Shipper
from tests.support.fake_loki import FakeLoki
from tests.support.ndjson_receiver import Receiver
from tests.support.nginx import APPS, AppNginx, have_nginx
from tests.support.procs import free_port, port_open, wait_until


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    made = Receiver(tmp_path / "receiver").start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def loki(tmp_path: Path) -> Iterator[FakeLoki]:
    made = FakeLoki(tmp_path / "loki").start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def shippers(tmp_path: Path) -> Iterator[list[Shipper]]:
    made: list[Shipper] = []
    try:
        yield made
    finally:
        for shipper in made:
            shipper.stop()


@dataclass
class Site:
    """The real app nginx serving the demo site on ``port``; logs in ``app.log_dir``."""

    app: AppNginx
    port: int

    @property
    def access_log(self) -> Path:
        return self.app.log_dir / "access.log"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Site]:
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    app = AppNginx(tmp_path / "nginx")
    port = free_port()
    conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    conf = conf.replace("${NGINX_PORT}", f"127.0.0.1:{port}").replace(
        "${SITE_DIR}", str(app.site_dir)
    )
    (app.site_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "html").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "conf.d" / "site.conf").write_text(conf)
    (app.site_dir / "html" / "index.html").write_text("hello\n")
    try:
        app.start()
        wait_until(lambda: port_open(port), timeout=10, what="site port")
        yield Site(app, port)
    finally:
        app.stop()
