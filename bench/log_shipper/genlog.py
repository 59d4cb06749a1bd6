"""A realistic nginx access log in the app's ``sidecars`` format, generated (never committed).

Deterministic for a seed: the same arguments give the same bytes, so runs compare. Shapes follow
a busy site: a few thousand clients, mostly GETs of a few hundred pages and assets, a long tail
of query strings, browser and bot user agents, 2xx/3xx mostly with some 4xx/5xx, upstream times
for the dynamic part.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

START = 1_795_478_400  # 2026-11-24T00:00:00Z
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "Prometheus/2.42.0",
    "kube-probe/1.30",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
]
AGENT_WEIGHTS = [30, 14, 8, 16, 14, 4, 2, 3, 2, 3, 2, 2]
METHODS = ["GET"] * 88 + ["POST"] * 8 + ["HEAD"] * 2 + ["PUT", "DELETE"]
STATUS = [200] * 80 + [304] * 6 + [301, 302] + [404] * 6 + [400, 401, 403] + [500, 502, 503]
SECTIONS = ["", "blog", "docs", "shop", "api/v1", "api/v2", "static/css", "static/js", "img"]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "kube",
    "nginx",
    "metrics",
    "logs",
    "shipper",
    "config",
    "cart",
    "item",
    "user",
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _time_local(seconds: int) -> str:
    t = time.gmtime(seconds)
    day = f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}"
    return f"{day}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def generate(path: Path, lines: int, seed: int = 1) -> int:
    """Write ``lines`` lines to ``path``; returns its size in bytes."""
    rng = random.Random(seed)
    clients = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(4000)
    ]
    pages = []
    for _ in range(600):
        section = rng.choice(SECTIONS)
        leaf = "-".join(rng.sample(WORDS, rng.randrange(1, 4)))
        ext = ".css" if "css" in section else ".js" if "js" in section else ""
        ext = ".webp" if section == "img" else ext
        pages.append(f"/{section}/{leaf}{ext}".replace("//", "/"))
    referers = ["-"] * 6 + [f"https://www.example.com{p}" for p in pages[:40]]
    referers += ["https://www.google.com/", "https://duckduckgo.com/"]
    users = ["-"] * 40 + ["alice", "bob"]
    seconds = START
    out = []
    with path.open("w", encoding="ascii") as handle:
        for i in range(lines):
            if rng.random() < 0.01:
                seconds += 1
            page = rng.choice(pages)
            if rng.random() < 0.3:
                page += f"?{rng.choice(WORDS)}={rng.randrange(100000)}&page={rng.randrange(50)}"
            status = rng.choice(STATUS)
            dynamic = page.startswith(("/api", "/shop", "/blog"))
            size = 0 if status in (304, 204) else rng.randrange(150, 90000)
            took = rng.randrange(0, 400 if dynamic else 20)
            upstream = f"{max(0, took - rng.randrange(3)) / 1000:.3f}" if dynamic else "-"
            agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
            out.append(
                f"{rng.choice(clients)} - {rng.choice(users)} [{_time_local(seconds)}] "
                f'"{rng.choice(METHODS)} {page} HTTP/1.1" {status} {size} '
                f'"{rng.choice(referers)}" "{agent}" {took / 1000:.3f} "{upstream}"\n'
            )
            if len(out) >= 10000 or i == lines - 1:
                handle.write("".join(out))
                out.clear()
    return path.stat().st_size


def grow_to(source: Path, path: Path, size: int) -> tuple[int, int]:
    """``path`` := copies of ``source`` until it holds at least ``size`` bytes.
    Returns (bytes, lines)."""
    per_copy = source.stat().st_size
    with source.open("rb") as handle:
        lines_per_copy = sum(
            chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")
        )
    copies = -(-size // per_copy)
    with path.open("wb") as out:
        for _ in range(copies):
            with source.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    return per_copy * copies, lines_per_copy * copies
