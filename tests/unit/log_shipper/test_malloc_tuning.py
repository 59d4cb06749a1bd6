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


def test_only_large_batches_fix_the_threshold() -> None:
    # The Pod's 256 KiB batches: 20 % more CPU per line for 0.7 MiB; the 1 MiB default: 4 % for
    # 3.7 MiB (bench/pod_tax/TRIED.md).
    assert not main.wants_fixed_mmap_threshold(256 * 1024)
    assert main.wants_fixed_mmap_threshold(1024 * 1024)
    assert main.wants_fixed_mmap_threshold(4 * 1024 * 1024)
