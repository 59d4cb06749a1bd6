"""A container's CPU seconds and peak memory from its cgroup, on cgroup v1, v2 or a hybrid.

The cgroup holds every process of the container (nginx's master and workers alike), so its
counters are the container's whole cost, what a Kubernetes limit is enforced against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Group:
    cpu: Path  # cpuacct.usage (ns, v1) or cpu.stat (usage_usec, v2)
    memory_peak: Path | None  # memory.max_usage_in_bytes (v1) or memory.peak (v2, kernel 5.19+)
    procs: Path  # cgroup.procs, for the processes' VmHWM


def parse(proc_cgroup: str) -> dict[str, str]:
    """/proc/PID/cgroup as controller -> path; the v2 group under the key ''."""
    groups: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            groups[controller] = path
    return groups


def locate(groups: dict[str, str], root: Path = ROOT) -> Group:
    """The files to read: v1 controllers where they are mounted, else the v2 group."""
    unified = root / "unified" if (root / "unified").is_dir() else root
    v2 = unified / groups.get("", "/").lstrip("/")
    cpu = None
    if "cpuacct" in groups:
        for mount in ("cpuacct", "cpu,cpuacct"):
            candidate = root / mount / groups["cpuacct"].lstrip("/") / "cpuacct.usage"
            if candidate.exists():
                cpu = candidate
                break
    if cpu is None:
        cpu = v2 / "cpu.stat"
    peak = None
    if "memory" in groups:
        memory = root / "memory" / groups["memory"].lstrip("/")
        peak = memory / "memory.max_usage_in_bytes"
        procs = memory / "cgroup.procs"
    else:
        peak = v2 / "memory.peak"
        procs = v2 / "cgroup.procs"
    return Group(cpu=cpu, memory_peak=peak if peak.exists() else None, procs=procs)


def of_pid(pid: int) -> Group:
    return locate(parse(Path(f"/proc/{pid}/cgroup").read_text()))


def cpu_seconds(group: Group) -> float:
    text = group.cpu.read_text()
    if group.cpu.name == "cpuacct.usage":
        return int(text) / 1e9
    stat = dict(line.split() for line in text.splitlines())
    return int(stat["usage_usec"]) / 1e6


def peak_mib(group: Group) -> float | None:
    return int(group.memory_peak.read_text()) / 2**20 if group.memory_peak else None


def memory_split(group: Group) -> tuple[float, float] | None:
    """(anonymous, page cache) MiB charged to the group now, from memory.stat: what its peak is
    made of. v1 ``total_rss``/``total_cache`` (the group and any below it), v2 ``anon``/``file``.
    A file's pages are charged to the group that first read them: the image's files read at
    start count here only when no other group (the image build) read them before."""
    try:
        text = (group.procs.parent / "memory.stat").read_text()
    except OSError:
        return None
    stat = dict(line.split()[:2] for line in text.splitlines() if line.strip())
    for anon, cache in (("total_rss", "total_cache"), ("rss", "cache"), ("anon", "file")):
        if anon in stat and cache in stat:
            return int(stat[anon]) / 2**20, int(stat[cache]) / 2**20
    return None


def vmhwm_mib(group: Group) -> tuple[float, float]:
    """The largest VmHWM among the group's processes, and their sum (MiB)."""
    values = []
    for pid in group.procs.read_text().split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # exited meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                values.append(int(line.split()[1]) / 1024)
    return (max(values, default=0.0), sum(values))
