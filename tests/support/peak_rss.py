"""Run a process to its end and report its peak memory: ``VmHWM`` (the kernel's high-water mark
of its RSS) read from /proc/<pid>/status every few milliseconds while it runs. The mark only
rises, so any sample after the peak sees it; only a peak in the last milliseconds before the
process releases its memory at exit could be missed, and the fetcher spends far longer than
that logging and shutting down after refusing a bundle.

Not wait4's ``ru_maxrss``: Linux carries the pre-exec high-water mark of the forked copy of the
parent into it, so a child of a test process that built a large bundle inherits that size."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    code: int
    stdout: str
    stderr: str
    vmhwm_kib: int  # highest VmHWM read from /proc/<pid>/status while it ran
    samples: int
    seconds: float

    @property
    def peak_mib(self) -> float:
        return self.vmhwm_kib / 1024


def _vmhwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass  # the process is exiting: wait4's figure covers the end
    return 0


def run_measured(
    args: Sequence[str],
    *,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    sample_every: float = 0.002,
) -> Measured:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=env, start_new_session=True)
        hwm = pid = samples = 0
        try:
            while True:
                # Sample before reaping: the last sample is taken as late as possible.
                sample = _vmhwm_kib(proc.pid)
                samples += bool(sample)
                hwm = max(hwm, sample)
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.monotonic() - started > timeout:
                    raise AssertionError(f"{args[:4]}... still running after {timeout}s")
                time.sleep(sample_every)  # a sampling interval, not a wait for a condition
        finally:
            if pid != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return Measured(
            code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            vmhwm_kib=hwm,
            samples=samples,
            seconds=seconds,
        )
