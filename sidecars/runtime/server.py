"""The health and metrics HTTP server every part runs: /healthz, /readyz, /metrics.

Imported only when a part listens (``--listen``), so an init container run with
``--listen off`` never pays for aiohttp's server side."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sidecars.runtime.health import Health
from sidecars.runtime.parsers import HostPort


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
