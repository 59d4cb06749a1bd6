"""The pure parts of bench/pod_tax: finding a container's cgroup files, reading py-spy stacks."""

from __future__ import annotations

from pathlib import Path

from bench.pod_tax import cgroups
from bench.pod_tax.run import top_frames

HYBRID = """12:memory:/libpod_parent/libpod-abc
4:cpu,cpuacct:/libpod_parent/libpod-abc
1:name=systemd:/libpod_parent/libpod-abc
0::/libpod_parent/libpod-abc
"""


def test_hybrid_layout_reads_the_v1_controllers(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct" / "libpod_parent" / "libpod-abc"
    memory = tmp_path / "memory" / "libpod_parent" / "libpod-abc"
    cpu.mkdir(parents=True)
    memory.mkdir(parents=True)
    (tmp_path / "unified").mkdir()
    (cpu / "cpuacct.usage").write_text("2500000000\n")
    (memory / "memory.max_usage_in_bytes").write_text(f"{3 * 2**20}\n")
    group = cgroups.locate(cgroups.parse(HYBRID), tmp_path)
    assert cgroups.cpu_seconds(group) == 2.5
    assert cgroups.peak_mib(group) == 3


def test_pure_v2_reads_cpu_stat_and_memory_peak(tmp_path: Path) -> None:
    group_dir = tmp_path / "machine.slice" / "libpod-abc.scope"
    group_dir.mkdir(parents=True)
    (group_dir / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (group_dir / "memory.peak").write_text(f"{5 * 2**20}\n")
    group = cgroups.locate(cgroups.parse("0::/machine.slice/libpod-abc.scope\n"), tmp_path)
    assert cgroups.cpu_seconds(group) == 1.5
    assert cgroups.peak_mib(group) == 5


def test_memory_split_reads_anon_and_page_cache_on_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "memory" / "libpod_parent" / "libpod-abc"
    v1.mkdir(parents=True)
    (v1 / "memory.stat").write_text(f"cache 1\nrss 2\ntotal_cache {2**20}\ntotal_rss {3 * 2**20}\n")
    group = cgroups.locate(cgroups.parse(HYBRID), tmp_path)
    assert cgroups.memory_split(group) == (3, 1)
    v2 = tmp_path / "g"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 1\n")
    (v2 / "memory.stat").write_text(f"anon {5 * 2**20}\nfile {2**21}\nkernel 9\n")
    assert cgroups.memory_split(cgroups.locate({"": "/g"}, tmp_path)) == (5, 2)
    (v2 / "memory.stat").unlink()
    assert cgroups.memory_split(cgroups.locate({"": "/g"}, tmp_path)) is None


def test_a_v2_kernel_without_memory_peak_reports_none(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "cpu.stat").write_text("usage_usec 1\n")
    assert cgroups.peak_mib(cgroups.locate({"": "/g"}, tmp_path)) is None


def test_top_frames_ranks_own_time_and_the_projects_functions() -> None:
    lib = "/opt/venv/lib/python3.11/site-packages/sidecars/log_shipper"
    raw = (
        f"<module> (sidecars/__main__.py:1);run (/usr/lib/python3.11/asyncio/runners.py:9);"
        f"read ({lib}/pipeline.py:40);json ({lib}/chunk_fields.py:7) 30\n"
        f"<module> (sidecars/__main__.py:1);run (/usr/lib/python3.11/asyncio/runners.py:9);"
        f"read ({lib}/pipeline.py:41) 10\n"
        "garbage line\n"
    )
    samples, own, total = top_frames(raw)
    assert samples == 40
    assert own == [
        ("json (sidecars/log_shipper/chunk_fields.py)", 30),
        ("read (sidecars/log_shipper/pipeline.py)", 10),
    ]
    assert total == [
        ("read (sidecars/log_shipper/pipeline.py)", 40),
        ("json (sidecars/log_shipper/chunk_fields.py)", 30),
    ]
