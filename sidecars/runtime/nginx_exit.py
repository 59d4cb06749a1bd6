"""Waiting for nginx to exit: its master, seen through the Pod's shared PID namespace.

For the log-shipper's final drain: on SIGTERM it reads every file to its end, but "the end" is
final only once nothing writes any more. In a Pod with ``shareProcessNamespace: true`` the
shipper sees nginx's processes in /proc: it waits until the nginx master that has its log files
open has exited (its workers write through descriptors inherited from it and exit before it
does), then reads to the end. Without a shared PID namespace no master is visible and the end is
taken as final at once (in a native-sidecar Pod, Kubernetes stops nginx before its sidecars
anyway).

A master is one whose command line starts with ``nginx: master process`` (found by
runtime/nginx_proc.py, shared with the rotation). Of those, only a
master holding one of the tailed files open counts, so unrelated nginx processes (other Pods'
on a node with a shared host PID namespace, other tests on a machine) are not waited for; a
master whose descriptors cannot be read (another user) counts, since in a Pod's own PID
namespace every nginx is the Pod's.

``python -m sidecars.runtime.nginx_exit --wait [--timeout S] [--paths GLOB ...]`` waits until no
such master is left (a preStop hook: the classic Pod's sidecars then get their SIGTERM only
after nginx has stopped) and exits 0, also at the timeout, which it reports on stderr.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sidecars.runtime.logs import kv
from sidecars.runtime.nginx_proc import PROC, is_master, masters, open_files

log = logging.getLogger("sidecars.nginx_exit")

def regular_files(patterns: Sequence[str]) -> dict[str, os.stat_result]:
    """The regular files matching ``patterns``, with their stat (also the rotation's view)."""
    found: dict[str, os.stat_result] = {}
    for pattern in patterns:
        for path in glob.glob(pattern):
            try:
                info = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[path] = info
    return found


def matching_files(patterns: Sequence[str]) -> set[tuple[int, int]]:
    return {(info.st_dev, info.st_ino) for info in regular_files(patterns).values()}


def writers(patterns: Sequence[str] | None, proc: Path = PROC) -> list[int]:
    """The nginx masters writing files that match ``patterns`` (None: every nginx master)."""
    found = masters(proc)
    if patterns is None or not found:
        return found
    ours = matching_files(patterns)
    result = []
    for pid in found:
        held = open_files(pid, proc)
        if held is None or held & ours:
            result.append(pid)
    return result


class WriterWatch:
    """Finds the writers at the first call of ``gone()`` (the start of the final drain), then
    answers whether all of them have exited."""

    def __init__(self, patterns: Sequence[str], proc: Path = PROC) -> None:
        self.patterns = list(patterns)
        self.proc = proc
        self.pids: list[int] | None = None
        self.exited_at: float | None = None

    def gone(self) -> bool:
        if self.pids is None:
            self.pids = writers(self.patterns, self.proc)
            if self.pids:
                log.info(
                    "waiting for nginx to exit before reading the logs to their end",
                    extra=kv(nginx_master=self.pids),
                )
        if self.exited_at is not None:
            return True
        if any(is_master(pid, self.proc) for pid in self.pids):
            return False
        self.exited_at = time.monotonic()
        if self.pids:
            log.info("nginx has exited; reading the logs to their end", extra=kv(pids=self.pids))
        return True


def wait(patterns: Sequence[str] | None, timeout: float, proc: Path = PROC) -> bool:
    """Until no writer is left, at most ``timeout`` seconds; True if none is left."""
    deadline = time.monotonic() + timeout
    pids = writers(patterns, proc)
    while any(is_master(pid, proc) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait", action="store_true", required=True, help="wait for exit")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds at most")
    parser.add_argument("--paths", action="append", help="only a master writing these globs")
    args = parser.parse_args(argv)
    if not wait(args.paths, args.timeout):
        print(f"nginx still running after {args.timeout:g}s; not waiting longer", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
