"""The conf.d file `sidecars inject` emits, in a real nginx laid out like the official image
(nginx.conf with its own `main` access log and `include /etc/nginx/conf.d/*.conf` in http {},
the team's default.conf beside ours): the config loads, the published site is served, stub_status
answers on the Pod's localhost only, our log holds exactly one line per request in the format the
sidecars parse, and the master's process title is what the config-fetcher looks for in /proc."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sidecars.inject import nginx_conf
from sidecars.runtime import nginx_log
from sidecars.runtime.nginx_proc import MASTER_TITLE as MASTER
from tests.support.nginx import NGINX, _globals, have_nginx
from tests.support.procs import Proc, free_port, http_get, port_open, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed"),
]

REPO = Path(__file__).resolve().parents[3]
# The official image's /etc/nginx/nginx.conf, its paths under the test's root.
OFFICIAL = """
worker_processes  1;
error_log  {root}/var/log/nginx/error.log notice;
pid        {root}/var/run/nginx.pid;
events {{
    worker_connections  1024;
}}
http {{
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';
    access_log  {root}/var/log/nginx/access.log  main;
    sendfile        on;
    keepalive_timeout  65;
    client_body_temp_path {root}/cache/client_temp;
    proxy_temp_path {root}/cache/proxy_temp;
    fastcgi_temp_path {root}/cache/fastcgi_temp;
    uwsgi_temp_path {root}/cache/uwsgi_temp;
    scgi_temp_path {root}/cache/scgi_temp;
    include {root}/etc/nginx/conf.d/*.conf;
}}
"""
DEFAULT_CONF = """
server {{
    listen       127.0.0.1:{port};
    server_name  localhost;
    location / {{
        return 200 "the team's default server\\n";
    }}
}}
"""


def injected_conf() -> str:
    docs = yaml.safe_load_all((REPO / "k8s" / "deployment.yaml").read_text())
    (cm,) = (d for d in docs if d["kind"] == "ConfigMap")
    return cm["data"][nginx_conf.CONF_KEY]


@pytest.fixture
def official(tmp_path: Path) -> Iterator[dict]:
    ports = {"default": free_port(), "site": free_port(), "status": free_port()}
    root = tmp_path
    for sub in ("var/log/nginx", "var/run", "cache", "etc/nginx/conf.d", "logs", "site/html"):
        (root / sub).mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_text(OFFICIAL.format(root=root))
    (root / "etc/nginx/conf.d/default.conf").write_text(DEFAULT_CONF.format(port=ports["default"]))
    ours = injected_conf()
    for old, new in (
        (nginx_conf.LOGS_IN_APP, str(root / "logs")),  # the `logs` volume
        ("/srv/site", str(root / "site")),  # the `site` volume
        ("127.0.0.1:8081", f"127.0.0.1:{ports['status']}"),
    ):
        assert old in ours
        ours = ours.replace(old, new)
    (root / "etc/nginx/conf.d" / nginx_conf.CONF_KEY).write_text(ours)
    # What config-fetcher publishes: the demo site, its ${NAMES} filled in.
    site = (REPO / "apps/site/conf.d/site.conf").read_text()
    site = site.replace("${NGINX_PORT}", f"127.0.0.1:{ports['site']}")
    site = site.replace("${SITE_DIR}", str(root / "site"))
    (root / "site/conf.d").mkdir()
    (root / "site/conf.d/site.conf").write_text(site)
    (root / "site/html/index.html").write_text("published by the fetcher\n")
    proc = Proc(
        [
            NGINX,
            "-e",
            "stderr",
            "-p",
            str(root),
            "-c",
            str(root / "etc/nginx/nginx.conf"),
            "-g",
            _globals(),
        ],
        root / "nginx.out",
    )
    try:
        wait_until(lambda: port_open(ports["site"]), timeout=10, what="nginx on the site port")
        yield {"root": root, "ports": ports, "proc": proc}
    finally:
        proc.stop()


def test_official_layout_with_the_injected_conf(official: dict) -> None:
    root, ports = official["root"], official["ports"]
    status, body, _ = http_get(f"http://127.0.0.1:{ports['site']}/")
    assert (status, body) == (200, b"published by the fetcher\n")
    status, body, _ = http_get(f"http://127.0.0.1:{ports['default']}/missing")
    assert status == 200 and b"default server" in body  # the team's conf.d still works
    status, body, _ = http_get(f"http://127.0.0.1:{ports['status']}/stub_status")
    assert status == 200 and body.startswith(b"Active connections:")

    ours = root / "logs" / "access.log"
    wait_until(
        lambda: ours.exists() and len(ours.read_text().splitlines()) == 2,
        timeout=10,
        what="two requests in our access log",
    )
    # One line per app request (the site's and the team's server), none for the stub_status
    # scrape, none twice.
    lines = ours.read_text().splitlines()
    parser = nginx_log.PRESETS["sidecars"]
    fields = [parser.parse(line) for line in lines]
    assert all(fields), lines
    assert [f["status"] for f in fields] == ["200", "200"]
    # The image's own `main` log keeps going where it went (its stdout symlink in the image).
    assert len((root / "var/log/nginx/access.log").read_text().splitlines()) == 2


def _children(pid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:  # exited meanwhile
            continue
        if stat and stat.rsplit(") ", 1)[1].split()[1] == str(pid):
            found.append(entry)
    return found


def test_the_master_has_the_title_the_fetcher_looks_for(official: dict) -> None:
    pid = int((official["root"] / "var/run/nginx.pid").read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(MASTER)
    children = wait_until(lambda: _children(pid), timeout=10, what="nginx's worker")
    assert all(not Path(f"/proc/{c}/cmdline").read_bytes().startswith(MASTER) for c in children)


def test_the_fetcher_finds_this_master_by_the_log_it_holds(official: dict) -> None:
    # Other nginx masters may run on this machine: only ours holds our error log open.
    from sidecars.config_fetcher.reload import master_by_log

    pid = int((official["root"] / "var/run/nginx.pid").read_text())
    assert master_by_log(official["root"] / "logs" / "error.log") == pid
