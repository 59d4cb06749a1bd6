"""A Pod's config-fetcher life on 127.0.0.1: the real origin and app nginx (tests/support/nginx.py)
sharing a temp dir as the `site` volume, and watch fetchers started and restarted against them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.config_fetcher.helpers import Run, fetch_once, tar_gz, watch_cmd
from tests.support.metrics import scrape
from tests.support.nginx import APPS, AppNginx, OriginNginx
from tests.support.procs import Proc, free_port, http_get, wait_until

SITE_CONF = (APPS / "site" / "conf.d" / "site.conf").read_text()


def site_conf(mark: str, broken: bool = False) -> bytes:
    """apps/site's server block answering /version with ``mark``: only a reload brings it."""
    location = f'location = /version {{ return 200 "{mark}\\n"; }}'
    if broken:
        location = f"locatio = /version {{ return 200 {mark}; }}"  # nginx: unknown directive
    return SITE_CONF.replace("location / {", f"{location}\n    location / {{").encode()


def bundle(mark: str, broken: bool = False, **extra: bytes) -> dict[str, bytes]:
    files = {"conf.d/site.conf": site_conf(mark, broken), "html/index.html": f"{mark}\n".encode()}
    files.update({name.replace("__", "/"): data for name, data in extra.items()})
    return files


def push(origin: OriginNginx, files: dict[str, bytes]) -> None:
    """Replace site.tar.gz at the origin atomically (it never serves a torn file)."""
    tmp = origin.docroot / ".site.tar.gz.tmp"
    tmp.write_bytes(tar_gz(files))
    os.replace(tmp, origin.docroot / "site.tar.gz")


@dataclass
class PodLike:
    tmp: Path
    origin: OriginNginx
    app: AppNginx
    port: int = field(default_factory=free_port)  # nginx's site port (NGINX_PORT)
    fetchers: list[Proc] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "NGINX_PORT": f"127.0.0.1:{self.port}",
            "SITE_DIR": str(self.app.site_dir),
            "POD_NAME": "web-0",
        }

    @property
    def source(self) -> str:
        return self.origin.url("site.tar.gz")

    @property
    def error_log(self) -> Path:
        return self.app.log_dir / "error.log"

    def init(self, *args: str) -> Run:
        return fetch_once(self.source, self.app.site_dir, "--env-subst", *args, env=self.env)

    def get(self, path: str) -> tuple[int, bytes]:
        status, body, _ = http_get(f"http://127.0.0.1:{self.port}{path}")
        return status, body

    def watch(self, *extra: str, ready: bool = True, pidfile: bool = True) -> Watch:
        listen = free_port()
        signal_args = ["--reload-pidfile", str(self.app.pid_file)] if pidfile else []
        proc = Proc(
            watch_cmd(
                self.source,
                str(self.app.site_dir),
                "--env-subst",
                *signal_args,
                "--nginx-error-log",
                str(self.error_log),
                "--listen",
                f"127.0.0.1:{listen}",
                "--interval",
                "0.2",
                "--reload-debounce",
                "0.1",
                "--retry-initial",
                "0.05",
                "--retry-max",
                "0.2",
                # Pushes here follow each other within a second: nginx's mtime+size ETag of two
                # same-size bundles can repeat, so every check is an unconditional GET.
                "--etag-max-age",
                "0",
                *extra,
            ),
            self.tmp / f"fetcher-{len(self.fetchers)}.log",
            env=self.env,
        )
        self.fetchers.append(proc)
        watch = Watch(proc, listen)
        if ready:
            wait_until(lambda: watch.probe("/readyz")[0] == 200, timeout=20, what="fetcher ready")
        return watch

    def data_version(self) -> str:
        return os.readlink(self.app.site_dir / "..data")


@dataclass
class Watch:
    proc: Proc
    listen: int

    def probe(self, path: str) -> tuple[int, dict]:
        status, body, _ = http_get(f"http://127.0.0.1:{self.listen}{path}")
        return status, json.loads(body)

    def metric(self, name: str, **labels: str) -> float:
        return scrape(self.listen).get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in scrape(self.listen) if n == name]

    def events(self) -> list[dict]:
        out = []
        for line in self.proc.output().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self) -> int | None:
        return self.proc.stop()


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[PodLike]:
    origin = OriginNginx(tmp_path / "origin").start()
    app = AppNginx(tmp_path / "app")
    app.render()
    pod = PodLike(tmp_path, origin, app)
    try:
        yield pod
    finally:
        for proc in pod.fetchers:
            proc.stop()
        app.stop()
        origin.stop()
