"""The benchmark's HTTP receiver: accepts any POST body, counts its records, answers 200.

Run as its own process (``python -m bench.log_shipper.fast_sink PORT``) so its CPU is apart
from the shipper's. It answers ``Expect: 100-continue`` (aiohttp sends the interim 100 when the
handler reads the body; syslog-ng's http() waits about 1 s per batch for it otherwise), and
aiohttp's parser gunzips ``Content-Encoding: gzip`` bodies before they are counted. A record
is one line: NDJSON lines from the log-shipper, ``delimiter("\\n")``-joined messages from
syslog-ng.

``GET /stats`` -> {"records", "requests", "body_bytes" (as sent), "bytes" (decoded), "first",
"last", "cpu"}:
``first``/``last`` are CLOCK_MONOTONIC seconds (comparable across processes on Linux) of the
first and the latest request, ``cpu`` this process's CPU seconds. ``POST /reset`` zeroes them.
"""

from __future__ import annotations

import sys
import time

from aiohttp import web


class Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.records = self.requests = self.body_bytes = self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, body: bytes, wire_bytes: int | None) -> None:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        self.body_bytes += len(body) if wire_bytes is None else wire_bytes
        self.requests += 1
        self.bytes += len(body)
        if body:
            self.records += body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        self.last = time.monotonic()


def build_app() -> web.Application:
    counter = Counter()

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        counter.add(body, request.content_length)
        return web.Response(status=200)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "records": counter.records,
                "requests": counter.requests,
                "body_bytes": counter.body_bytes,
                "bytes": counter.bytes,
                "first": counter.first,
                "last": counter.last,
                "cpu": time.process_time(),
            }
        )

    async def reset(_: web.Request) -> web.Response:
        counter.reset()
        return web.Response(status=204)

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", ingest)
    app.router.add_put("/{tail:.*}", ingest)
    return app


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(build_app(), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
