from __future__ import annotations

from sidecars.runtime.health import Health


def test_liveness_is_recent_progress_not_just_alive() -> None:
    now = [0.0]
    health = Health(stale_after=10.0, clock=lambda: now[0])
    assert health.liveness()[0]
    now[0] = 11.0
    ok, detail = health.liveness()
    assert not ok and "no progress for 11.0s" in detail
    health.progress()
    assert health.liveness()[0]


def test_readiness_is_set_by_the_part() -> None:
    health = Health(stale_after=None)
    assert health.readiness() == (False, "starting")
    health.set_ready(True, "published")
    assert health.readiness() == (True, "published")


def test_liveness_of_registered_loops_fails_on_the_stuck_one() -> None:
    now = [0.0]
    health = Health(stale_after=10.0, clock=lambda: now[0])
    reader, sender = health.loop("read"), health.loop("send")
    now[0] = 8.0
    reader.tick()
    now[0] = 12.0
    ok, detail = health.liveness()
    assert not ok and "loop 'send' has not turned for 12.0s" in detail
    sender.tick()
    assert health.liveness() == (True, "2 loops turning, slowest 4.0s ago")
    now[0] = 30.0
    reader.close()
    sender.close()  # ended loops do not count; with none left, progress() rules again
    assert not health.liveness()[0]
    health.progress()
    assert health.liveness()[0]
