"""The /metrics handler: authorise, negotiate the format, serve the shared snapshot."""

from __future__ import annotations

from sidecars.metrics_proxy.auth import Guard
from sidecars.metrics_proxy.exposition import Format, negotiate
from sidecars.metrics_proxy.scrape import LARGE_SNAPSHOT, Scraper
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.runtime.server import Handler, Request, Response, text_response

# Distinct Accept / Accept-Encoding pairs whose answer is kept: a scraper sends the same ones
# every time, and a client sending new ones each time only makes them be worked out again.
NEGOTIATED = 64


def accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def answer_headers(fmt: Format, compressed: bool) -> dict[str, str]:
    headers = {"Content-Type": fmt.content_type, "Vary": "Accept, Accept-Encoding"}
    if compressed:
        headers["Content-Encoding"] = "gzip"
    return headers


def metrics_endpoint(scraper: Scraper, guard: Guard, telemetry: Telemetry) -> Handler:
    # (Accept, Accept-Encoding) -> (format, gzip, the answer's headers; never changed after)
    negotiated: dict[tuple[str, str], tuple[Format, bool, dict[str, str]]] = {}

    async def handle(request: Request) -> Response:
        headers = request.headers
        if guard.enabled and not guard.allows(headers.get("authorization")):
            telemetry.scraped("unauthorized")
            return text_response(401, "unauthorized\n", {"WWW-Authenticate": guard.challenge()})
        key = (headers.get("accept", ""), headers.get("accept-encoding", ""))
        choice = negotiated.get(key)
        if choice is None:
            fmt, compressed = negotiate(key[0]), accepts_gzip(key[1])
            choice = (fmt, compressed, answer_headers(fmt, compressed))
            if len(negotiated) < NEGOTIATED:
                negotiated[key] = choice
        fmt, compressed, answer = choice
        snapshot = await scraper.snapshot()
        telemetry.scraped("ok")
        if snapshot.samples < LARGE_SNAPSHOT:  # rendered here and now: no coroutine for it
            return Response(200, snapshot.body(fmt, compressed), answer)
        return Response(200, await snapshot.body_async(fmt, compressed), answer)

    return handle
