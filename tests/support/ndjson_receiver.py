"""The HTTP sink's receiver for tests: a real process that stores NDJSON batches.

``python -m tests.support.ndjson_receiver --port P --data DIR`` accepts ``POST /ingest``
(NDJSON, optionally gzip), de-duplicates by ``Idempotency-Key`` (a repeated key is answered 200
and counted, not stored again) and appends what it stores to ``DIR/lines.ndjson`` (keys in
``DIR/keys.txt``), so a restarted receiver remembers what it had. Faults for tests:
``POST /control`` with ``{"status": 429, "count": N}`` answers the next N batches with that
status (and a ``Location`` header with ``"location": URL``), ``{"hang": true}`` holds every
batch without answering until ``{"hang": false}``, ``{"authorization": "Bearer T"}`` answers 401
to every batch without that ``Authorization`` header (``null``: no check).
``GET /stats`` returns counters (``authorizations``: batches per ``Authorization`` value
received); ``GET /lines`` every stored line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.procs import Proc, free_port, port_open, wait_until


@dataclass
class Store:
    data: Path
    keys: set[str] = field(default_factory=set)
    lines: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "requests": 0,
            "batches": 0,
            "duplicates": 0,
            "rejected": 0,
            "faults": 0,
            "gzip": 0,
        }
    )
    fault_status: int = 0
    fault_count: int = 0
    fault_location: str | None = None
    authorization: str | None = None  # required Authorization value, if any
    authorizations: dict[str, int] = field(default_factory=dict)
    hang: asyncio.Event = field(default_factory=asyncio.Event)  # set = not hanging

    def load(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        keys_file, lines_file = self.data / "keys.txt", self.data / "lines.ndjson"
        if keys_file.exists():
            self.keys = set(keys_file.read_text().split())
        if lines_file.exists():
            self.lines = [json.loads(x) for x in lines_file.read_text().splitlines() if x]
        self.hang.set()

    def append(self, key: str, objects: list[dict[str, Any]]) -> None:
        """Store before answering: a 200 means the batch is on disk here (written in one go on
        the loop's thread, so batches never interleave)."""
        with open(self.data / "lines.ndjson", "a", encoding="utf-8") as out:
            out.write("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects))
        with open(self.data / "keys.txt", "a") as out:
            out.write(key + "\n")
        self.keys.add(key)
        self.lines.extend(objects)
        self.counters["batches"] += 1


async def ingest(request: web.Request) -> web.Response:
    store: Store = request.app["store"]
    store.counters["requests"] += 1
    body = await request.read()
    await store.hang.wait()
    seen = request.headers.get("Authorization", "")
    store.authorizations[seen] = store.authorizations.get(seen, 0) + 1
    if store.authorization is not None and seen != store.authorization:
        store.counters["rejected"] += 1
        return web.Response(status=401, text="unauthorized")
    if store.fault_count > 0:
        store.fault_count -= 1
        store.counters["faults"] += 1
        headers = {"Retry-After": "0"}
        if store.fault_location:
            headers["Location"] = store.fault_location
        return web.Response(status=store.fault_status, headers=headers)
    if request.headers.get("Content-Encoding") == "gzip":
        # aiohttp's server has already inflated the body (and answered 400 had it been
        # invalid gzip): count that the sender compressed.
        store.counters["gzip"] += 1
    if request.content_type != "application/x-ndjson":
        store.counters["rejected"] += 1
        return web.Response(status=415, text="expected application/x-ndjson")
    key = request.headers.get("Idempotency-Key")
    if not key:
        store.counters["rejected"] += 1
        return web.Response(status=400, text="Idempotency-Key required")
    if key in store.keys:
        store.counters["duplicates"] += 1
        return web.Response(status=200, text="duplicate")
    try:
        objects = [json.loads(x) for x in body.decode("utf-8").splitlines() if x]
    except ValueError as exc:
        store.counters["rejected"] += 1
        return web.Response(status=400, text=f"bad NDJSON: {exc}")
    store.append(key, objects)
    return web.Response(status=200, text="ok")


async def control(request: web.Request) -> web.Response:
    store: Store = request.app["store"]
    order = await request.json()
    if "status" in order:
        store.fault_status, store.fault_count = int(order["status"]), int(order["count"])
        store.fault_location = order.get("location")
    if "authorization" in order:
        store.authorization = order["authorization"]
    if "hang" in order:
        (store.hang.clear if order["hang"] else store.hang.set)()
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    store: Store = request.app["store"]
    return web.json_response(
        {**store.counters, "lines": len(store.lines), "authorizations": store.authorizations}
    )


async def lines(request: web.Request) -> web.Response:
    return web.json_response(request.app["store"].lines)


def build_app(data: Path) -> web.Application:
    app = web.Application(client_max_size=256 * 1024**2)
    store = Store(data)
    store.load()
    app["store"] = store
    app.router.add_post("/ingest", ingest)
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    app.router.add_get("/lines", lines)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    web.run_app(
        build_app(args.data), host=args.host, port=args.port, print=None, ssl_context=context
    )


# --- the tests' handle on the process ----------------------------------------------------------


class Receiver:
    """``host``: the address to listen on (e.g. a podman bridge's gateway, for a Pod);
    ``tls``: (certificate, key) PEM files to serve HTTPS with; the tests' own requests to it
    (stats, control) do not verify the certificate: what is under test is the sender's check."""

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.proc: Proc | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/ingest"

    def start(self) -> Receiver:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "tests.support.ndjson_receiver",
            "--port",
            str(self.port),
            "--host",
            self.host,
            "--data",
            str(self.root / "data"),
        ]
        if self.tls:
            args += ["--tls", str(self.tls[0]), str(self.tls[1])]
        self.proc = Proc(args, self.root / "receiver.out", cwd=Path(__file__).parents[2])
        wait_until(lambda: port_open(self.port, self.host), timeout=15, what="ndjson receiver port")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def _open(self, request: urllib.request.Request) -> bytes:
        context = ssl._create_unverified_context() if self.tls else None
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            assert response.status == 200
            return response.read()  # type: ignore[no-any-return]

    def _get(self, path: str) -> Any:
        return json.loads(self._open(urllib.request.Request(self.base + path)))

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")  # type: ignore[no-any-return]

    def lines(self) -> list[dict[str, Any]]:
        return self._get("/lines")  # type: ignore[no-any-return]

    def control(self, **order: Any) -> None:
        request = urllib.request.Request(
            f"{self.base}/control",
            data=json.dumps(order).encode(),
            headers={"Content-Type": "application/json"},
        )
        self._open(request)


if __name__ == "__main__":
    main()
