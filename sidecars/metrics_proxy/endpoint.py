"""The /metrics handler: authorise, negotiate the format, serve the shared snapshot."""

from __future__ import annotations

from sidecars.metrics_proxy.auth import Guard
from sidecars.metrics_proxy.exposition import negotiate
from sidecars.metrics_proxy.scrape import Scraper
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.runtime.server import Handler, Request, Response, text_response


def accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def metrics_endpoint(scraper: Scraper, guard: Guard, telemetry: Telemetry) -> Handler:
    async def handle(request: Request) -> Response:
        if guard.enabled and not guard.allows(request.headers.get("authorization")):
            telemetry.scraped("unauthorized")
            return text_response(401, "unauthorized\n", {"WWW-Authenticate": guard.challenge()})
        fmt = negotiate(request.headers.get("accept", ""))
        compressed = accepts_gzip(request.headers.get("accept-encoding", ""))
        snapshot = await scraper.snapshot()
        headers = {"Content-Type": fmt.content_type, "Vary": "Accept, Accept-Encoding"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        telemetry.scraped("ok")
        return Response(200, await snapshot.body_async(fmt, compressed), headers)

    return handle
