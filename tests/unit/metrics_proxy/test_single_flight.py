"""Concurrent scrapes share one fetch; a waiter that leaves does not cancel it for others."""

from __future__ import annotations

import asyncio

import pytest

from sidecars.metrics_proxy.scrape import SingleFlight


class Producer:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        return self.calls


async def test_concurrent_callers_share_one_call() -> None:
    producer = Producer()
    flight = SingleFlight(producer)
    waiters = [asyncio.ensure_future(flight.run()) for _ in range(100)]
    await asyncio.sleep(0)
    producer.release.set()
    assert await asyncio.gather(*waiters) == [1] * 100
    assert producer.calls == 1
    # once it is done, the next caller starts a fresh call
    assert await flight.run() == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    producer = Producer()
    flight = SingleFlight(producer)
    first = asyncio.ensure_future(flight.run())
    leaving = asyncio.ensure_future(flight.run())
    staying = asyncio.ensure_future(flight.run())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    producer.release.set()
    assert await first == 1
    assert await staying == 1
    assert leaving.cancelled()
    assert producer.calls == 1


async def test_when_the_caller_making_the_call_leaves_the_others_get_a_fresh_call() -> None:
    producer = Producer()
    flight = SingleFlight(producer)
    leaving = asyncio.ensure_future(flight.run())  # makes the call itself
    staying = [asyncio.ensure_future(flight.run()) for _ in range(3)]
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    late = asyncio.ensure_future(flight.run())  # joins the call started again
    await asyncio.sleep(0)
    producer.release.set()
    assert await asyncio.gather(*staying, late) == [2] * 4
    assert leaving.cancelled()
    assert producer.calls == 2


async def test_a_cancelled_call_nobody_else_waits_for_leaves_the_next_to_start_anew() -> None:
    producer = Producer()
    flight = SingleFlight(producer)
    leaving = asyncio.ensure_future(flight.run())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    producer.release.set()
    assert await flight.run() == 2
    assert producer.calls == 2


async def test_a_failure_reaches_every_waiter_and_the_next_call_retries() -> None:
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise RuntimeError("boom")
        return calls

    flight = SingleFlight(failing)
    results = await asyncio.gather(flight.run(), flight.run(), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await flight.run() == 2


@pytest.mark.parametrize("n", [1, 1000])
async def test_many_waiters(n: int) -> None:
    producer = Producer()
    flight = SingleFlight(producer)
    waiters = [asyncio.ensure_future(flight.run()) for _ in range(n)]
    await asyncio.sleep(0)
    producer.release.set()
    assert set(await asyncio.gather(*waiters)) == {1}
    assert producer.calls == 1
