"""An event loop in a thread of its own, for one upstream's fetch and parse.

Parsing a large upstream body is seconds of CPU; on the main loop it would hold /healthz and
every other scrape for that long. And a fetch can be held by more than slowness: a parser bug
that loops without awaiting (a chunk size of -1 once did) is beyond any ``asyncio.timeout`` of
the loop it runs on. Run in this thread, the main loop still bounds it by the wall clock
(``run`` below), and the GIL is handed back to the main thread every switch interval (5 ms), so
the main loop keeps answering while this one works or spins.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# How much later than the job's own bound the waiting side gives up. The job's bound fires on
# its loop and ends the job; the waiter's is the backstop for a job that does not yield. Were
# they equal, a thread slowed by load would see the waiter give up first, the job still
# running, and the next scrape find the thread busy ("stalled") for what was only a timeout.
OUTER_MARGIN = 1.0


class Busy(Exception):
    """The previous job has not ended yet (it outlived its deadline)."""


class LoopThread:
    """One job at a time on a private event loop in a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._busy = False  # set here, cleared by the worker thread when a job ends
        self._job: asyncio.Task[None] | None = None  # referenced, so it is not collected

    @property
    def busy(self) -> bool:
        return self._busy

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name=f"upstream-{self.name}", daemon=True
            )
            self._thread.start()
            self._loop = loop
        return self._loop

    async def run(self, job: Callable[[], Awaitable[T]], seconds: float) -> T:
        """``await job()`` on the thread's loop; TimeoutError after ``seconds`` (the job's
        own bound, on its loop), and after ``seconds + OUTER_MARGIN`` of wall clock whatever
        the job does; Busy while an earlier job is still running there."""
        if self._busy:
            raise Busy(self.name)
        self._busy = True  # cleared by the job itself when it ends, and by nothing else
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def bounded() -> None:
            # Free before the result is handed over, so the waiter may start the next job.
            try:
                # The job's own bound, on its loop: it ends there too, not only here.
                async with asyncio.timeout(seconds):
                    value = await job()
            except Exception as exc:
                self._busy = False
                _settle(result.set_exception, exc)
            except BaseException:
                self._busy = False
                _settle(result.set_exception, RuntimeError("stopped"))
                raise
            else:
                self._busy = False
                _settle(result.set_result, value)

        loop = self._start()

        def start() -> None:
            self._job = loop.create_task(bounded())

        try:
            loop.call_soon_threadsafe(start)
        except BaseException:
            self._busy = False
            raise
        async with asyncio.timeout(seconds + OUTER_MARGIN):
            return await asyncio.wrap_future(result)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop and wait for the thread a little; a thread held by a job that never
        yields is left to end with the process (it is a daemon)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    # The waiting side may have given up (timed out) and cancelled the future meanwhile.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        setter(value)
