"""Traffic for the app nginx: numbered requests, so each access-log line is recognisable."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterable

_ID = re.compile(r"[?&]id=(\d+)")


def request_ids(port: int, ids: Iterable[int], prefix: str = "/") -> None:
    """GET ``prefix?id=N`` for each N over one keep-alive connection; every answer must be 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for number in ids:
            conn.request("GET", f"{prefix}?id={number}")
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (number, response.status)
    finally:
        conn.close()


class Background:
    """Requests ``ids`` from a thread while the test rotates, kills or truncates."""

    def __init__(self, port: int, ids: Iterable[int]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(port, list(ids)), daemon=True)

    def _run(self, port: int, ids: list[int]) -> None:
        try:
            request_ids(port, ids)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "load did not finish"
        if self.error is not None:
            raise self.error

    def running(self) -> bool:
        return self.thread.is_alive()


def id_of(line: str) -> int | None:
    match = _ID.search(line)
    return None if match is None else int(match.group(1))
