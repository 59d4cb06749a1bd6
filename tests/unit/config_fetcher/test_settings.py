"""The config-fetcher's probe and reload settings, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecars.config_fetcher.settings import PART, Settings
from sidecars.runtime.settings import SettingsError, load

BASE = ["--watch", "--source", "http://origin/site.tar.gz", "--dest", "/srv/site"]


def test_defaults_fit_the_pod() -> None:
    s = load(Settings, PART, BASE, {})
    assert s.nginx_error_log == Path("/var/log/nginx/error.log")
    assert s.stuck_after > 2 * s.timeout + s.reload_timeout + 1
    assert load(Settings, PART, [*BASE, "--nginx-error-log", "off"], {}).nginx_error_log is None


def test_stuck_after_must_outlast_one_slow_healthy_attempt() -> None:
    with pytest.raises(SettingsError, match="--stuck-after"):
        load(Settings, PART, [*BASE, "--timeout", "150"], {})
    ok = load(Settings, PART, [*BASE, "--timeout", "150", "--stuck-after", "600"], {})
    assert ok.stuck_after == 600
    # The sleep between attempts is not an attempt: a long --interval needs no longer bound.
    slow = ["--interval", "600", "--stale-after", "1200"]
    assert load(Settings, PART, [*BASE, *slow], {}).stuck_after == 300
