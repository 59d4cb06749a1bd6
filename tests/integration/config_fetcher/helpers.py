"""Running the real config-fetcher CLI and reading what it published."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from tests.support.procs import sidecars_cmd


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def site_bundle(files_dir: Path) -> bytes:
    """apps/site as the origin serves it: a .tar.gz of its contents."""
    return tar_gz(
        {
            p.relative_to(files_dir).as_posix(): p.read_bytes()
            for p in sorted(files_dir.rglob("*"))
            if p.is_file()
        }
    )


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.events = []
        for line in proc.stdout.splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"raw": line})

    def errors(self) -> list[dict]:
        return [e for e in self.events if e.get("level") == "error"]

    def reason(self) -> str:
        errors = self.errors()
        assert len(errors) == 1, f"expected exactly one error line, got:\n{self.stdout}"
        return errors[0]["msg"]


def once_cmd(source: str, dest: Path, *args: str) -> list[str]:
    """The command line of an init-container fetcher (no health server, quick retries)."""
    return sidecars_cmd(
        "config-fetcher",
        "--once",
        "--source",
        source,
        "--dest",
        str(dest),
        "--listen",
        "off",
        "--retry-initial",
        "0.05",
        *args,
    )


def watch_cmd(source: str | Path, dest: str | Path, *args: str) -> list[str]:
    """The command line of a sidecar fetcher (``--watch``)."""
    return sidecars_cmd(
        "config-fetcher", "--watch", "--source", str(source), "--dest", str(dest), *args
    )


def fetch_once(
    source: str, dest: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> Run:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        once_cmd(source, dest, "--retry-max", "0.5", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return Run(proc)


def snapshot(dest: Path) -> dict[str, bytes | str]:
    """Every name under dest (links as their targets, files as bytes), for byte-for-byte checks."""
    result: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = Path(root, name)
            rel = path.relative_to(dest).as_posix()
            if path.is_symlink():
                result[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                result[rel] = path.read_bytes()
    return result
