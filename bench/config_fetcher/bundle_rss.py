"""Peak RSS of `config-fetcher --once` against bundle size, to size --max-bytes and
--max-unpacked-bytes for the Pod's 128Mi limit (k8s/pod.yaml).

    python -m bench.config_fetcher.bundle_rss            # prints a Markdown table

Each bundle is served by the real origin nginx (apps/origin) and fetched as the init container
does (HTTP, --env-subst), with caps raised out of the way; the peak is VmHWM read from
/proc/<pid>/status while the process runs (tests/support/peak_rss.py). Two kinds of content:
text (base64 of random bytes, gzip ~1.3:1; --env-subst makes a second copy of every text file)
and binary (random bytes, incompressible: the fetched archive is as large as its content).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import statistics
import tarfile
import tempfile
from pathlib import Path

from tests.support.nginx import OriginNginx
from tests.support.peak_rss import run_measured
from tests.support.procs import sidecars_cmd

MIB = 1 << 20
FILE_SIZE = 2 * MIB  # content as files of 2 MiB each (a site's assets)


def bundle(kind: str, total: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        sizes = [FILE_SIZE] * (total // FILE_SIZE) + (
            [total % FILE_SIZE] if total % FILE_SIZE else []
        )
        for index, size in enumerate(sizes):
            raw = rng.randbytes(size * 3 // 4 + 3 if kind == "text" else size)
            data = base64.encodebytes(raw)[:size] if kind == "text" else raw
            info = tarfile.TarInfo(f"html/assets/{index:04d}.{'txt' if kind == 'text' else 'bin'}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def measure(
    origin: OriginNginx, work: Path, name: str, runs: int, caps: bool = False
) -> list[float]:
    peaks = []
    for run in range(runs):
        result = run_measured(
            sidecars_cmd(
                "config-fetcher",
                "--once",
                "--listen",
                "off",
                "--env-subst",
                "--source",
                origin.url(name),
                "--dest",
                str(work / f"dest-{name}-{run}"),
                *([] if caps else ["--max-bytes", "1GiB", "--max-unpacked-bytes", "1GiB"]),
            ),
            env={**os.environ, "NGINX_PORT": "8080", "SITE_DIR": "/srv/site", "POD_NAME": "b"},
        )
        if result.code != 0:
            raise SystemExit(f"{name}: exit {result.code}\n{result.stdout[-2000:]}")
        peaks.append(result.peak_mib)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,8,16,24,32,48,64", help="unpacked MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cf-rss-") as tmp:
        work = Path(tmp)
        origin = OriginNginx(work / "origin").start()
        try:
            print("| content | unpacked | fetched (.tar.gz) | peak RSS (VmHWM), median | min-max |")
            print("|---|---|---|---|---|")
            for kind in ("text", "binary"):
                for size in (int(s) for s in args.sizes.split(",")):
                    data = bundle(kind, size * MIB) if size else _tiny()
                    row(origin, work, f"{kind}-{size}.tar.gz", data, args.runs, kind, f"{size} MiB")
            # The largest bundles the default caps accept (a tar stream just under 16 MiB).
            for kind in ("text", "binary"):
                data = bundle(kind, 16 * MIB - 64 * 1024)
                label = "16 MiB - 64 KiB, **default caps**"
                row(origin, work, f"{kind}-max.tar.gz", data, args.runs, kind, label, caps=True)
        finally:
            origin.stop()


def row(
    origin: OriginNginx,
    work: Path,
    name: str,
    data: bytes,
    runs: int,
    kind: str,
    label: str,
    caps: bool = False,
) -> None:
    (origin.docroot / name).write_bytes(data)
    peaks = measure(origin, work, name, runs, caps)
    print(
        f"| {kind} | {label} | {len(data) / MIB:.1f} MiB | {statistics.median(peaks):.1f} MiB | "
        f"{min(peaks):.1f}-{max(peaks):.1f} |"
    )


def _tiny() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("html/index.html")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ok\n"))
    return buf.getvalue()


if __name__ == "__main__":
    main()
