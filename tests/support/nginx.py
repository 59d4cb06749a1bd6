"""Run the project's real nginx configs (apps/) as unprivileged processes on 127.0.0.1.

The configs are the ones the images ship; only their absolute paths and ports are rewritten
to a test's temp dir and free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import Proc, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "apps"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def have_nginx() -> bool:
    return os.path.exists(NGINX)


def _globals() -> str:
    # As root, nginx would drop its workers to "nobody", who cannot read pytest's 0700 temp dirs;
    # the images run nginx as a non-root user, where this directive does not apply.
    return "daemon off; user root;" if os.geteuid() == 0 else "daemon off;"


@dataclass
class AppNginx:
    """apps/nginx/nginx.conf with its volumes under ``root``: site/, logs/, run/, cache/."""

    root: Path
    status_port: int = field(default_factory=free_port)
    proc: Proc | None = None
    # The access log's format: nginx.conf's own ("sidecars"), or "" for a stock nginx's
    # `access_log PATH;` (nginx's built-in combined).
    access_format: str = "sidecars"

    @property
    def site_dir(self) -> Path:
        return self.root / "site"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "nginx.pid"

    def render(self) -> Path:
        for sub in ("site", "logs", "run", "cache", "conf"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        text = (APPS / "nginx" / "nginx.conf").read_text()
        stock = "access_log /var/log/nginx/access.log sidecars;"
        assert stock in text
        text = text.replace(stock, stock.replace(" sidecars;", f" {self.access_format};"))
        for old, new in (
            ("/srv/site", str(self.site_dir)),
            ("/var/log/nginx", str(self.log_dir)),
            ("/run/nginx", str(self.root / "run")),
            ("/var/cache/nginx", str(self.root / "cache")),
            ("127.0.0.1:8081", f"127.0.0.1:{self.status_port}"),
        ):
            text = text.replace(old, new)
        conf = self.root / "conf" / "nginx.conf"
        conf.write_text(text)
        return conf

    def start(self) -> AppNginx:
        conf = self.render()
        self.proc = Proc(
            [NGINX, "-e", "stderr", "-p", str(self.root), "-c", str(conf), "-g", _globals()],
            self.root / "nginx.out",
        )
        wait_until(lambda: port_open(self.status_port), timeout=10, what="nginx stub_status port")
        return self

    def master_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def reopen_logs(self) -> None:
        os.kill(self.master_pid(), signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@dataclass
class OriginNginx:
    """apps/origin/nginx.conf: a real HTTP origin with ETag support serving ``docroot``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def docroot(self) -> Path:
        return self.root / "docroot"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> OriginNginx:
        self.docroot.mkdir(parents=True, exist_ok=True)
        text = (APPS / "origin" / "nginx.conf").read_text()
        text = text.replace("/srv/origin", str(self.docroot)).replace(
            "listen 8090", f"listen 127.0.0.1:{self.port}"
        )
        text = text.replace("/tmp/origin", str(self.root / "origin"))
        text = text.replace("access_log /dev/stdout", f"access_log {self.root / 'access.log'}")
        conf = self.root / "origin.conf"
        conf.write_text(text)
        self.proc = Proc(
            [NGINX, "-e", "stderr", "-p", str(self.root), "-c", str(conf), "-g", _globals()],
            self.root / "origin.out",
        )
        wait_until(lambda: port_open(self.port), timeout=10, what="origin nginx port")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
