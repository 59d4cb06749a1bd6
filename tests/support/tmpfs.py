"""A small tmpfs for tests of full or read-only volumes (root only: ``mount`` needs it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    """``path`` (created) as a tmpfs of ``size`` (e.g. ``64k``; ``options`` such as
    ``nr_inodes=64``), unmounted afterwards."""
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mount_options = ",".join([f"size={size}", "mode=0755", *options])
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", mount_options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, option: str) -> None:
    """``ro`` or ``rw``; ``size=...`` to grow or shrink it."""
    subprocess.run(["mount", "-o", f"remount,{option}", str(path)], check=True)


def fill(path: Path) -> Path:
    """Take every free byte of the file system under ``path`` (appended to a file named
    ``filler``: called again, it takes what was freed meanwhile)."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
    finally:
        os.close(fd)
    return filler
