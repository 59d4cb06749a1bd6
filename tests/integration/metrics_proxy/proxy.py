"""The metrics-proxy as a real process (``python -m sidecars metrics-proxy``) on a free port."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.procs import Proc, free_port, http_get, sidecars_cmd, wait_until

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_samples(body: bytes) -> Series:
    """Samples of a text-format body under their exact names (prometheus_client's parser would
    add ``_total`` to counters that lack it, hiding the very thing some tests check)."""
    samples: Series = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, value = match.groups()
        labels = []
        for label in _LABEL.finditer(raw_labels or ""):
            text = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], label.group(2))
            labels.append((label.group(1), text))
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(value)
    return samples


class Proxy:
    def __init__(
        self,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        scheme: str = "http",
        ca: ssl.SSLContext | None = None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.scheme = scheme
        self.ca = ca
        self.proc = Proc(
            sidecars_cmd("metrics-proxy", "--listen", f"127.0.0.1:{self.port}", *args),
            root / f"metrics-proxy-{self.port}.out",
            env=env,
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def get(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes, dict[str, str]]:
        if self.ca is not None:
            request = urllib.request.Request(self.url + path, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=self.ca) as r:
                    return r.status, r.read(), dict(r.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read(), dict(exc.headers)
        return http_get(self.url + path, timeout=timeout, headers=headers)

    def wait_ready(self, timeout: float = 15.0) -> Proxy:
        def ready() -> bool:
            if self.proc.popen.poll() is not None:
                raise AssertionError(f"metrics-proxy exited: {self.proc.output()[-3000:]}")
            return self.get("/readyz", timeout=2)[0] == 200

        wait_until(ready, timeout=timeout, what="metrics-proxy /readyz")
        return self

    def scrape(self, headers: dict[str, str] | None = None) -> Series:
        status, body, _ = self.get("/metrics", headers=headers)
        assert status == 200, (status, body[:500])
        return parse_samples(body)

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def stop(self) -> int | None:
        return self.proc.stop()
