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
