"""Merging a large upstream /metrics: the event loop's stall and the process's peak memory.

For each upstream body size, a fresh metrics-proxy merges one upstream serving an exposition
body of that size (histograms with a few labels, as an app's HTTP metrics look), with the
manifest's const labels. While /metrics is scraped a few times as Prometheus does (OpenMetrics,
gzip), another thread sends /healthz over a kept-alive connection every few milliseconds: the
slowest /healthz answer during the scrapes is how long the event loop was held (beside it the
slowest answer over 2 s with nothing merging, the machine's own noise). VmHWM (peak RSS) is
read from /proc/<pid>/status after the scrapes.

    python -m bench.metrics_proxy.merge_bench --sizes 1,2,4,8           # app-like histograms
    python -m bench.metrics_proxy.merge_bench --sizes 0.5,1,2 --shape tiny  # the costliest per byte
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import http.server
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.metrics_proxy.measure import memory_kib
from tests.support.procs import Proc, free_port, http_get, sidecars_cmd, wait_until

IDLE_SECONDS = 2.0
STUB_STATUS = (
    b"Active connections: 1 \nserver accepts handled requests\n 7 7 9 \n"
    b"Reading: 0 Writing: 1 Waiting: 0 \n"
)
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
# What Prometheus 2.x sends when it scrapes.
UP_LINE = b'metrics_proxy_upstream_up{upstream="app",pod="bench-0",namespace="default"} 1\n'
PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = ("200", "201", "204", "301", "400", "404", "500", "503")


def exposition(size: int) -> bytes:
    """A text-format body of about ``size`` bytes: one histogram family per 1,000 series."""
    out: list[str] = []
    total = series = 0
    while total < size:
        family = f"app_http_request_duration_seconds_{series // 1000}"
        if series % 1000 == 0:
            head = f"# HELP {family} Request latency\n# TYPE {family} histogram\n"
            out.append(head)
            total += len(head)
        labels = (
            f'method="{METHODS[series % 4]}",route="/api/v1/items/{series % 997}",'
            f'status="{STATUSES[series % 8]}"'
        )
        lines = [
            f'{family}_bucket{{{labels},le="{le}"}} {series * 7 + i}\n'
            for i, le in enumerate(BUCKETS)
        ]
        lines.append(f"{family}_sum{{{labels}}} {series * 0.25}\n")
        lines.append(f"{family}_count{{{labels}}} {series * 7 + 11}\n")
        out.extend(lines)
        total += sum(len(line) for line in lines)
        series += 1
    return "".join(out).encode()


def tiny_series(size: int) -> bytes:
    """The costliest shape per byte: one family of the shortest distinct series."""
    out = ["# TYPE x gauge\n"]
    total = len(out[0])
    i = 0
    while total < size:
        line = f'x{{i="{i:x}"}} 1\n'
        out.append(line)
        total += len(line)
        i += 1
    return "".join(out).encode()


SHAPES = {"histograms": exposition, "tiny": tiny_series}


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True
    body = b""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = STUB_STATUS if self.path == "/stub_status" else self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def probe(port: int, stop: threading.Event, latencies: list[tuple[float, float]]) -> None:
    """/healthz every 2 ms over one connection; (when it was sent, how long it took)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.is_set():
        sent = time.monotonic()
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        latencies.append((sent, time.monotonic() - sent))
        stop.wait(0.002)
    conn.close()


def run_one(size_mib: float, scrapes: int, root: Path, shape: str) -> dict[str, float]:
    upstream = Upstream(("127.0.0.1", 0), Handler)
    upstream.body = SHAPES[shape](int(size_mib * 1024 * 1024))
    samples = upstream.body.count(b"\n") - upstream.body.count(b"\n#")
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{upstream.server_address[1]}"
    port = free_port()
    proc = Proc(
        sidecars_cmd(
            "metrics-proxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--stub-status-url",
            base + "/stub_status",
            "--merge-url",
            f"app={base}/metrics",
            "--merge-max-bytes",
            "64MiB",
            "--merge-timeout",
            "60s",
            "--const-labels",
            "pod=bench-0",
            "--const-labels",
            "namespace=default",
            "--log-level",
            "warning",
        ),
        root / f"proxy-{size_mib}.out",
    )
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/readyz", timeout=2)[0] == 200,
            timeout=15,
            what="metrics-proxy ready",
        )
        _, idle_hwm = memory_kib(proc.pid)
        stop = threading.Event()
        latencies: list[tuple[float, float]] = []
        prober = threading.Thread(target=probe, args=(port, stop, latencies))
        prober.start()
        wait_until(lambda: len(latencies) > 20, timeout=10, what="probe running")
        # The same probe with nothing merging, as the reference on a shared machine.
        idle_from = time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = [lat for sent, lat in latencies if sent >= idle_from]
        windows = []
        up = 0.0
        for _ in range(scrapes):
            started = time.monotonic()
            status, body, _ = http_get(
                f"http://127.0.0.1:{port}/metrics", timeout=120, headers=PROMETHEUS
            )
            windows.append((started, time.monotonic()))
            assert status == 200, status
            body = gzip.decompress(body)
            up = float(UP_LINE in body)
            if not up:
                print([ln for ln in body.splitlines() if b"upstream_up" in ln], file=sys.stderr)
        stop.set()
        prober.join()
        during = [lat for sent, lat in latencies if any(a <= sent <= b for a, b in windows)]
        _, hwm = memory_kib(proc.pid)
        return {
            "size_mib": size_mib,
            "body_bytes": len(upstream.body),
            "samples": samples,
            "merged": up,
            "scrape_s": max(b - a for a, b in windows),
            "healthz_max_ms": max(during) * 1000,
            "healthz_idle_max_ms": max(idle) * 1000,
            "healthz_n": len(during),
            "idle_hwm_mib": idle_hwm / 1024,
            "hwm_mib": hwm / 1024,
        }
    finally:
        proc.stop()
        upstream.shutdown()
        upstream.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8", help="upstream body sizes in MiB")
    parser.add_argument("--scrapes", type=int, default=6)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="histograms")
    args = parser.parse_args()
    print(
        "| upstream body | samples | scrape | slowest /healthz during it | slowest /healthz, "
        "idle | VmHWM idle | VmHWM |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (float(s) for s in args.sizes.split(",")):
            r = run_one(size, args.scrapes, Path(tmp), args.shape)
            if not r["merged"]:
                print(f"upstream of {size} MiB not merged", file=sys.stderr)
            print(
                f"| {r['body_bytes'] / 1048576:.1f} MiB | {r['samples']:,.0f} "
                f"| {r['scrape_s']:.2f} s | {r['healthz_max_ms']:.0f} ms "
                f"(of {r['healthz_n']:.0f}) | {r['healthz_idle_max_ms']:.0f} ms "
                f"| {r['idle_hwm_mib']:.1f} MiB "
                f"| {r['hwm_mib']:.1f} MiB |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
