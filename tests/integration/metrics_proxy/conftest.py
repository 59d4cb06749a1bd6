"""Fixtures for the metrics-proxy's integration tests: real nginx, real processes, every one
stopped also on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.metrics_proxy.fake_upstream import Behaviour, FakeUpstream
from tests.integration.metrics_proxy.proxy import Proxy
from tests.support.nginx import APPS, AppNginx, have_nginx
from tests.support.procs import free_port, port_open, wait_until

# Locations added to the demo site so traffic of a known shape is possible: a real 500, a POST
# endpoint, upstream /metrics bodies served as files, and a proxied location (so
# $upstream_response_time is logged).
EXTRA_LOCATIONS = """
    location = /fail {
        return 500;
    }
    location = /api/submit {
        return 201 "created\\n";
    }
    location /exposition/ {
        default_type "text/plain; version=0.0.4";
    }
    location = /proxied {
        proxy_pass http://127.0.0.1:SITE_PORT/index.html;
    }
"""


@dataclass
class Site:
    """The real app nginx with the demo site on ``port``."""

    app: AppNginx
    port: int

    @property
    def access_log(self) -> Path:
        return self.app.log_dir / "access.log"

    @property
    def stub_status_url(self) -> str:
        return f"http://127.0.0.1:{self.app.status_port}/stub_status"

    @property
    def html(self) -> Path:
        return self.app.site_dir / "html"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Site:
        self.app.start()
        wait_until(lambda: port_open(self.port), timeout=10, what="site port")
        return self

    def stop(self) -> None:
        self.app.stop()


def make_site(root: Path) -> Site:
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    app = AppNginx(root)
    port = free_port()
    conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    conf = conf.replace("${NGINX_PORT}", f"127.0.0.1:{port}").replace(
        "${SITE_DIR}", str(app.site_dir)
    )
    extra = EXTRA_LOCATIONS.replace("SITE_PORT", str(port))
    conf = conf[: conf.rindex("}")] + extra + "}\n"
    (app.site_dir / "conf.d").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "html" / "exposition").mkdir(parents=True, exist_ok=True)
    (app.site_dir / "conf.d" / "site.conf").write_text(conf)
    (app.site_dir / "html" / "index.html").write_text("hello\n")
    app.render()  # log dir and friends exist before anyone tails them
    return Site(app, port)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Configured, not started: a test may start a proxy before nginx."""
    made = make_site(tmp_path / "nginx")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def nginx(site: Site) -> Site:
    return site.start()


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def start(*args: str, **kwargs: object) -> Proxy:
        proxy = Proxy(tmp_path / "proxy", *args, **kwargs)  # type: ignore[arg-type]
        made.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in made:
            proxy.stop()


@pytest.fixture
def fakes() -> Iterator[Callable[[Behaviour], FakeUpstream]]:
    made: list[FakeUpstream] = []

    def start(behaviour: Behaviour) -> FakeUpstream:
        fake = FakeUpstream(behaviour).start()
        made.append(fake)
        return fake

    try:
        yield start
    finally:
        for fake in made:
            fake.stop()
