"""What nginx's logs take on a volume while the log-shipper rotates them, and paced load that
makes them grow: for the rotation tests (integration and e2e-pod)."""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path


def open_deleted_bytes(pids: list[int], directory: Path) -> int:
    """Bytes of deleted files under ``directory`` still held open by ``pids`` (a deleted file
    takes its space until its last reader closes it)."""
    total = 0
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(fd_dir / name)
                if target.startswith(str(directory)) and target.endswith(" (deleted)"):
                    total += os.stat(fd_dir / name).st_size
            except OSError:
                continue
    return total


def volume_bytes(directory: Path, pids: list[int]) -> int:
    """What the logs take on the volume: the files there plus deleted ones still open."""
    files = 0
    for entry in os.scandir(directory):
        try:
            if entry.is_file():
                files += entry.stat().st_size
        except OSError:
            continue
    return files + open_deleted_bytes(pids, directory)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (nginx's master and workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


class VolumeWatch:
    """Samples the volume's bytes from a thread while load runs; keeps the peak."""

    def __init__(self, directory: Path, pids: list[int], every: float = 0.05) -> None:
        self.directory, self.pids, self.every = directory, pids, every
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, volume_bytes(self.directory, self.pids))
            self.samples += 1

    def __enter__(self) -> VolumeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _requests(port: int, paths: list[str], rate: float, started: float, first: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for index, path in enumerate(paths):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (path, response.status)
            if index % 50 == 49:  # keep to the pace (load shaping, not waiting for a condition)
                ahead = started + (first + index + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        conn.close()


def paced_load(port: int, paths: list[str], rate: float, clients: int = 2) -> None:
    """GET every path once, from ``clients`` keep-alive connections at about ``rate``
    requests/s in all; every answer must be 200. Bounded: each request has a 10 s timeout."""
    errors: list[BaseException] = []
    share = -(-len(paths) // clients)
    started = time.monotonic()

    def run(part: list[str]) -> None:
        try:
            _requests(port, part, rate / clients, started, 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(paths[i * share : (i + 1) * share],), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=len(paths) / rate * 3 + 60)
        assert not thread.is_alive(), "load did not finish"
    if errors:
        raise errors[0]
