"""A real Prometheus (Debian's ``prometheus``) as a plain process on a free port, with its own
config and TSDB under a test's temp dir, scraping its targets every second."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import Proc, free_port, http_get, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def have_prometheus() -> bool:
    return Path(PROMETHEUS).exists()


@dataclass
class ScrapeJob:
    name: str
    targets: list[str]  # host:port
    scheme: str = "http"
    metrics_path: str = "/metrics"
    bearer_token_file: Path | None = None
    ca_file: Path | None = None

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": self.name,
            "scheme": self.scheme,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": self.targets}],
        }
        if self.bearer_token_file is not None:
            job["authorization"] = {"credentials_file": str(self.bearer_token_file)}
        if self.ca_file is not None:
            job["tls_config"] = {"ca_file": str(self.ca_file)}
        return job


@dataclass
class Prometheus:
    root: Path
    jobs: list[ScrapeJob]
    port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [job.config() for job in self.jobs],
        }
        # JSON is YAML: no YAML writer needed, and no quoting surprises.
        (self.root / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.proc = Proc(
            [
                PROMETHEUS,
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.root / "prometheus.out",
            cwd=self.root,
        )
        wait_until(self._ready, timeout=timeout, what="prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.popen.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.proc.output()[-2000:]}")
        return http_get(self.url + "/-/ready", timeout=2)[0] == 200

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (each item has "metric" and "value")."""
        status, body, _ = http_get(
            f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5
        )
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {status} {body[:500]!r}")
        return answer["data"]["result"]

    def values(self, expr: str, by: str | None = None) -> dict[str, float]:
        """``{label value of `by` (or "") -> value}`` of an instant query."""
        return {
            (item["metric"].get(by, "") if by else ""): float(item["value"][1])
            for item in self.query(expr)
        }

    def metadata(self, metric: str) -> list[dict[str, Any]]:
        """What Prometheus recorded about ``metric`` (type, help) from its scrapes."""
        status, body, _ = http_get(
            f"{self.url}/api/v1/metadata?metric={urllib.parse.quote(metric)}", timeout=5
        )
        assert status == 200, body
        return json.loads(body)["data"].get(metric, [])

    def targets_health(self) -> list[str]:
        status, body, _ = http_get(self.url + "/api/v1/targets", timeout=5)
        assert status == 200, body
        return [t["health"] for t in json.loads(body)["data"]["activeTargets"]]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
