"""1,000 consecutive publishes of changing multi-file content while another process reads the
published tree in a tight loop: no torn file, no mixed versions.

The reader follows the documented protocol for multi-file consistency (resolve ``..data``
once, read below it) and also reads every file through its user-visible name, which must never
show a torn file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidecars.config_fetcher.bundle import Entry, digest
from sidecars.config_fetcher.publish import Publisher

pytestmark = pytest.mark.integration

FILES = [
    "conf.d/a.conf",
    "conf.d/b.conf",
    "conf.d/snippets/c.conf",
    "html/index.html",
    "html/big.bin",
]

READER = r"""
import json, os, re, sys
dest, stop, files = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
pattern = re.compile(rb"^version=(\d+);len=(\d+);\n(.*)END\n$", re.S)
stats = {"pinned_reads": 0, "visible_reads": 0, "torn": 0, "mixed": 0, "vanished": 0,
         "examples": []}

def check(data):
    m = pattern.match(data)
    if not m or len(m.group(3)) != int(m.group(2)):
        return None
    return int(m.group(1))

while not os.path.exists(stop):
    try:
        version_dir = os.path.join(dest, os.readlink(os.path.join(dest, "..data")))
    except FileNotFoundError:
        continue
    versions = set()
    try:
        for name in files:
            with open(os.path.join(version_dir, name), "rb") as f:
                v = check(f.read())
            if v is None:
                stats["torn"] += 1
                stats["examples"].append(name)
            versions.add(v)
    except FileNotFoundError:
        stats["vanished"] += 1  # an old version collected while we read it: re-read, not torn
        continue
    stats["pinned_reads"] += 1
    if len(versions) > 1:
        stats["mixed"] += 1
        stats["examples"].append(sorted(map(str, versions)))
    for name in files:
        try:
            with open(os.path.join(dest, name), "rb") as f:
                if check(f.read()) is None:
                    stats["torn"] += 1
                    stats["examples"].append("visible " + name)
        except FileNotFoundError:
            stats["vanished"] += 1
    stats["visible_reads"] += 1
stats["examples"] = stats["examples"][:10]
print(json.dumps(stats))
"""


def content(version: int, name: str) -> bytes:
    # Sizes change with every version, so a torn or stale read cannot look complete.
    size = (version * 7919 + len(name) * 131) % (200_000 if name.endswith(".bin") else 3000)
    payload = (f"{name}:{version}:".encode() * (size // 8 + 1))[:size]
    return f"version={version};len={size};\n".encode() + payload + b"END\n"


def make_bundle(version: int) -> dict[str, Entry]:
    bundle: dict[str, Entry] = {}
    for name in FILES:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            bundle["/".join(parts[:depth])] = Entry("dir", mode=0o755)
        bundle[name] = Entry("file", content(version, name))
    return bundle


def test_no_torn_or_mixed_reads_over_1000_publishes(tmp_path: Path) -> None:
    dest = tmp_path / "site"
    publisher = Publisher(dest, keep_versions=2)
    publisher.prepare()
    first = make_bundle(0)
    publisher.publish(first, digest(first), {})
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(dest), str(stop), ",".join(FILES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for version in range(1, 1001):
            bundle = make_bundle(version)
            publisher.publish(bundle, digest(bundle), {"version": version})
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    stats = json.loads(out)
    print("reader:", stats)
    assert stats["torn"] == 0, stats
    assert stats["mixed"] == 0, stats
    assert stats["pinned_reads"] >= 1000, f"the reader must really race the writer: {stats}"
    assert (dest / "html" / "index.html").read_bytes() == content(1000, "html/index.html")
    versions = [p for p in dest.iterdir() if p.name.startswith("..2")]
    assert len(versions) == 3, "the published version plus --keep-versions 2"
