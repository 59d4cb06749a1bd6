"""The health and metrics HTTP server every part runs: /healthz, /readyz, /metrics."""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecars.runtime.parsers import HostPort


class Health:
    """Liveness is *recent progress* (a part calls ``progress()`` after each successful unit of
    work), not merely "the process answers"; readiness is set by the part when it can serve."""

    def __init__(self, stale_after: float | None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.stale_after = stale_after
        self._last_progress = clock()
        self._ready = False
        self._ready_reason = "starting"

    def progress(self) -> None:
        self._last_progress = self._clock()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready, self._ready_reason = ready, reason

    def liveness(self) -> tuple[bool, str]:
        idle = self._clock() - self._last_progress
        if self.stale_after is not None and idle > self.stale_after:
            return False, f"no progress for {idle:.1f}s (stale after {self.stale_after:g}s)"
        return True, f"last progress {idle:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        return self._ready, self._ready_reason or ("ready" if self._ready else "not ready")


def _probe(check: Callable[[], tuple[bool, str]]) -> Callable[[web.Request], web.Response]:
    async def handler(_: web.Request) -> web.Response:
        ok, detail = check()
        return web.json_response(
            {"status": "ok" if ok else "fail", "detail": detail}, status=200 if ok else 503
        )

    return handler  # type: ignore[return-value]


def metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], web.Response]:
    async def handler(request: web.Request) -> web.Response:
        # Negotiate: OpenMetrics when the scraper asks for it, the classic text format otherwise.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    return handler  # type: ignore[return-value]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    health: Health, registry: CollectorRegistry, metrics: Handler | None = None
) -> web.Application:
    """``metrics`` replaces the default /metrics (the registry) for a part that serves its own
    (the metrics-proxy); /healthz and /readyz are always these."""
    app = web.Application()
    app.router.add_get("/healthz", _probe(health.liveness))
    app.router.add_get("/readyz", _probe(health.readiness))
    app.router.add_get("/metrics", metrics or metrics_handler(registry))
    return app


async def start(
    app: web.Application, listen: HostPort, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, listen.host, listen.port, reuse_address=True, ssl_context=ssl_context
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
