"""The log-shipper's results as PNG charts under bench/log_shipper/charts/ (see bench/charts.py).

Throughput and CPU per GiB of every tool in the file -> HTTP and backlog cases, and the senders'
memory (VmRSS sampled every 0.1 s) while they drain the backlog.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import charts

HERE = Path(__file__).resolve().parent
OUT = HERE / "charts"
DATA = OUT / "data.json"
GIB = 1024**3
CPU_TARGETS = {"parsing": 40.0, "raw": 15.0}  # issue 12: CPU s per GiB
RSS_TARGET_MIB = 40.0  # issue 12: peak RSS draining the backlog with parsing on


def _colour(tool: str) -> str:
    if tool.startswith("syslog-ng") or tool.startswith("rsyslog"):
        return "#8c8c8c"
    return "#d62728" if "--format" in tool else "#1f77b4"


@dataclass
class Point:
    """What a chart needs of one case's median run (run.Run has more)."""

    name: str
    tool: str
    mib_s: float
    cpu_gib: float
    rss_series: list[tuple[float, float]] = field(default_factory=list)


def render(cases: list[Any], caption: list[str]) -> list[Path]:
    """``cases``: run.Case objects (their median runs are charted). Returns the files written."""
    points = []
    for case in cases:
        if case.runs:
            run = case.median()
            per_gib = run.cpu / (run.nbytes / GIB)
            series = [(round(at, 2), round(mib, 2)) for at, mib in run.rss_series]
            points.append(Point(case.name, case.tool, run.mib_s, per_gib, series))
    charts.dump(DATA, {"points": [asdict(p) for p in points], "caption": caption})
    return draw(points, caption)


def redraw() -> list[Path]:
    """The charts again from the last run's numbers (``python -m bench.log_shipper.charts``)."""
    data = json.loads(DATA.read_text())
    return draw([Point(**p) for p in data["points"]], data["caption"])


def draw(cases: list[Point], caption: list[str]) -> list[Path]:
    plt = charts.pyplot()
    if plt is None:
        print("charts skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    http = [c for c in cases if c.name == "file -> HTTP" or "backlog" in c.name]
    written: list[Path] = []
    if http:
        for what, label, name in (
            ("mib_s", "MiB/s (higher is better)", "throughput"),
            ("cpu_gib", "CPU s per GiB (lower is better)", "cpu_per_gib"),
        ):
            written.append(_bars(plt, http, what, label, name, caption))
    backlog = [c for c in cases if "backlog" in c.name and c.rss_series]
    if backlog:
        written.append(_rss(plt, backlog, caption))
    return written


def _value(point: Point, what: str) -> float:
    return point.mib_s if what == "mib_s" else point.cpu_gib


def _bars(plt: Any, cases: list[Any], what: str, label: str, name: str, caption: list[str]) -> Path:
    groups = list(dict.fromkeys(c.name for c in cases))
    fig, axes = plt.subplots(1, len(groups), figsize=(9.5, 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        members = [c for c in cases if c.name == group]
        values = [_value(c, what) for c in members]
        ax.barh(range(len(members)), values, color=[_colour(c.tool) for c in members])
        ax.set_yticks(range(len(members)), [_short(c.tool) for c in members])
        ax.invert_yaxis()
        ax.set_title(group)
        ax.set_xlabel(label)
        for index, value in enumerate(values):
            ax.text(value, index, f" {value:.1f}", va="center", fontsize=7)
        if what == "cpu_gib":
            ax.axvline(CPU_TARGETS["parsing"], color="#d62728", ls="--", lw=0.8)
            ax.axvline(CPU_TARGETS["raw"], color="#1f77b4", ls="--", lw=0.8)
        ax.margins(x=0.18)
    if what == "cpu_gib":
        fig.suptitle("dashed: targets, 40 CPU s/GiB parsing (red), 15 without (blue)", fontsize=7)
    fig.tight_layout()
    charts.caption(fig, caption)
    return charts.save(fig, OUT / f"{name}.png")


def _rss(plt: Any, cases: list[Any], caption: list[str]) -> Path:
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    for case in cases:
        series = case.rss_series
        ax.plot([t for t, _ in series], [m for _, m in series], label=_short(case.tool),
                color=_colour(case.tool) if "syslog" in case.tool else None, lw=1.2)  # fmt: skip
    ax.axhline(RSS_TARGET_MIB, color="#d62728", ls="--", lw=0.8, label="target with parsing")
    ax.set_xlabel("seconds since spawn")
    ax.set_ylabel("VmRSS MiB")
    ax.set_title(f"memory while draining the {cases[0].name.split(' ->')[0]} into HTTP")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    charts.caption(fig, caption)
    return charts.save(fig, OUT / "rss_backlog.png")


def _short(tool: str) -> str:
    return tool.replace(" (parsing, as in the Pod)", " (Pod)").replace("log-shipper ", "shipper ")


if __name__ == "__main__":
    for written in redraw():
        print(f"wrote {written} ({written.stat().st_size / 1000:.0f} kB)")
