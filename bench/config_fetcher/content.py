"""What the benchmarks publish, built deterministically in memory (no I/O).

The demo site from apps/site is the base of every bundle, so the fetcher runs with the same
``--env-subst`` the Pod manifest gives it and nginx can serve the result.
"""

from __future__ import annotations

import base64
import gzip
import io
import random
import tarfile
from pathlib import Path

MIB = 1024 * 1024
SITE_CONF = "conf.d/site.conf"


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    # A fixed mtime keeps the archive's bytes a function of its content alone.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def site_files(site_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site_dir).as_posix(): p.read_bytes()
        for p in sorted(site_dir.rglob("*"))
        if p.is_file()
    }


def _text_asset(rng: random.Random, size: int) -> bytes:
    """Base64 lines of random bytes: text (so --env-subst scans it) that gzip cannot shrink
    much, so the archive on the wire is close to the size asked for."""
    raw = base64.encodebytes(rng.randbytes(size * 3 // 4 + 3))
    return raw[:size]


def bundle_of_size(
    site: dict[str, bytes], target: int, *, assets: int = 16, seed: int = 1
) -> bytes:
    """A .tar.gz of the demo site plus ``assets`` text files, grown until the archive itself
    (what the fetcher downloads) is ``target`` bytes within 0.5 %."""
    low, high = 0, target * 2  # bounds on the total size of the assets before packing
    while low <= high:
        mid = (low + high) // 2
        rng = random.Random(seed)
        files = dict(site)
        for n in range(assets):
            files[f"html/assets/part-{n:02d}.txt"] = _text_asset(rng, mid // assets)
        data = tar_gz(files)
        if abs(len(data) - target) <= target // 200:
            return data
        if len(data) < target:
            low = mid + 1
        else:
            high = mid - 1
    raise ValueError(f"no bundle within 0.5 % of {target} bytes")


def archive_files(archive: bytes) -> dict[str, bytes]:
    """The regular files of a .tar.gz, by name."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def configmap_files(files: dict[str, bytes], size: int) -> dict[str, bytes]:
    """The same content as a ConfigMap would carry it: flat keys (base names), cut to ``size``
    bytes in all (a ConfigMap holds at most 1 MiB)."""
    flat: dict[str, bytes] = {}
    left = size
    for name, data in sorted(files.items(), key=lambda item: "assets/" in item[0]):
        if left <= 0:
            break
        flat[name.rsplit("/", 1)[-1]] = data[:left]
        left -= len(flat[name.rsplit("/", 1)[-1]])
    return flat


def redirect_map(size: int) -> bytes:
    """One large config file of exactly ``size`` bytes: an nginx ``map`` of redirects, the
    kind of single generated file people ship through an init container."""
    lines = []
    total = 0
    n = 0
    while total < size:
        line = f"/old/section-{n // 100:04d}/page-{n:06d}.html /new/{n % 97:02d}/page-{n:06d}/;\n"
        lines.append(line)
        total += len(line)
        n += 1
    data = "".join(lines).encode()
    return data[: size - 1] + b"\n"


def site_conf_version(base_conf: str, version: int) -> str:
    """The demo server block plus a location that only a reloaded nginx can answer."""
    marker = "location / {"
    if marker not in base_conf:
        raise ValueError(f"apps/site/conf.d/site.conf no longer has {marker!r}")
    extra = f'location = /v {{ default_type text/plain; return 200 "{version}\\n"; }}\n    '
    return base_conf.replace(marker, extra + marker, 1)
