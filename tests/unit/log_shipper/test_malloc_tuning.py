"""The log-shipper fixes glibc's mmap threshold at start (main.fixed_mmap_threshold)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from sidecars.log_shipper import main


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(3) is glibc's")
def test_the_mmap_threshold_is_set_on_glibc() -> None:
    assert main.fixed_mmap_threshold() is True


def test_no_glibc_means_no_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotGlibc:
        def __init__(self, name: object) -> None:
            pass

        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", NotGlibc)
    assert main.fixed_mmap_threshold() is False
