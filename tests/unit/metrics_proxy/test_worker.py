"""An upstream's thread: its jobs are bounded by the wall clock even when they never yield,
and a held thread is reported, not queued onto."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from sidecars.metrics_proxy.worker import Busy, LoopThread
from tests.support.procs import wait_until


@pytest.fixture
def worker() -> Iterator[LoopThread]:
    made = LoopThread("test")
    yield made
    made.stop()


async def wait_idle(worker: LoopThread) -> None:
    await asyncio.to_thread(wait_until, lambda: not worker.busy, timeout=10, what="worker idle")


async def test_result_and_errors_come_back(worker: LoopThread) -> None:
    async def ok() -> str:
        return threading.current_thread().name

    async def fails() -> None:
        raise ValueError("bad bytes")

    assert await worker.run(ok, 5) == "upstream-test"  # ran in the worker's thread
    with pytest.raises(ValueError, match="bad bytes"):
        await worker.run(fails, 5)
    assert not worker.busy


async def test_a_job_that_never_yields_is_bounded_and_holds_only_its_thread(
    worker: LoopThread,
) -> None:
    release = threading.Event()

    async def spins() -> None:
        while not release.is_set():  # no await: no timeout of its own loop can stop it
            pass

    async def ok() -> int:
        return 1

    try:
        with pytest.raises(TimeoutError):
            await worker.run(spins, 0.2)
        await asyncio.sleep(0.01)  # this loop still turns
        with pytest.raises(Busy):
            await worker.run(ok, 5)  # not queued behind the held job
    finally:
        release.set()
    await wait_idle(worker)
    assert await worker.run(ok, 5) == 1


async def test_a_slow_job_is_ended_on_its_own_loop_too(worker: LoopThread) -> None:
    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(TimeoutError):
        await worker.run(slow, 0.1)
    await wait_idle(worker)  # cancelled there at its bound, not left running for 30 s


async def test_under_load_the_jobs_own_timeout_ends_it_before_the_waiter_gives_up(
    worker: LoopThread,
) -> None:
    """The thread's loop held past the job's bound (a stand-in for a loaded machine): the job's
    own timeout must still be what ends the call, so the thread is free for the next one.
    With equal bounds the waiter gave up first and the next call found the thread Busy."""
    import time

    async def stalls() -> None:
        asyncio.get_running_loop().call_later(0.05, time.sleep, 0.4)  # holds the thread's loop
        await asyncio.Event().wait()  # an upstream that never answers

    with pytest.raises(TimeoutError):
        await worker.run(stalls, 0.1)
    assert not worker.busy, "ended by its own bound, not abandoned by the waiter"

    async def ok() -> str:
        return "next"

    assert await worker.run(ok, 5) == "next"
