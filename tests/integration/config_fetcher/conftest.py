"""Fixtures the config-fetcher's integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nginx import AppNginx


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppNginx]:
    nginx = AppNginx(tmp_path / "app")
    nginx.render()
    try:
        yield nginx
    finally:
        nginx.stop()
