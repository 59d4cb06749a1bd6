"""A bench stopped by SIGTERM stops what it started (bench/stop.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from bench.stop import unwind_on_sigterm
    if sys.argv[1] == "on":
        unwind_on_sigterm()
    child = subprocess.Popen(["sleep", "300"])
    try:
        print(child.pid, flush=True)
        child.wait()
    finally:
        child.kill()
    """
)


def _orphan_after_sigterm(mode: str) -> bool:
    bench = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bench.stdout is not None
    child = int(bench.stdout.readline())
    try:
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=30)
        # killed children of ours stay zombies until reaped: gone means not 'S'leeping on
        try:
            wait_until(lambda: _state(child) in (None, "Z"), timeout=5)
        except Exception:
            return True
        return False
    finally:
        if _state(child) not in (None, "Z"):
            os.kill(child, signal.SIGKILL)


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def test_sigterm_unwinds_the_bench_and_its_children_go_with_it() -> None:
    assert _orphan_after_sigterm("off")  # Python's default: finally skipped, the child lives on
    assert not _orphan_after_sigterm("on")
