"""The chart of bench/pod_tax/run.py (bench/charts.py): the tax per container at each rate,
and the peak memory of each container. ``python -m bench.pod_tax.charts`` redraws it from
charts/data.json.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from bench import charts as chart_lib
from bench.pod_tax.report import CONTAINERS, SIDECARS, TARGET_MIB, TARGET_TAX, load, machine

HERE = Path(__file__).resolve().parent


def render(result: dict, started: datetime, command: str) -> list[Path]:
    windows = result["windows"]
    data = {
        "windows": [
            {
                "rate": w.rate,
                "cpu": w.cpu_drain,
                "peak": {n: w.peak[n] or w.hwm[n] for n in CONTAINERS},
            }
            for w in windows
        ],
        "caption": [
            f"{started:%Y-%m-%d %H:%M} UTC, .venv/bin/{command}",
            *machine(),
            f"load average before {load(result['load_before'])}, after "
            f"{load(result['load_after'])}",
        ],
    }
    chart_lib.dump(HERE / "charts" / "data.json", data)
    return draw(data)


def draw(data: dict) -> list[Path]:
    plt = chart_lib.pyplot()
    if plt is None:
        print("charts skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    windows = data["windows"]
    fig, (cpu_ax, mem_ax) = plt.subplots(1, 2, figsize=(8, 3.6))
    width = 0.8 / len(windows)
    colors = ("#4c72b0", "#dd8452", "#55a868")
    for index, w in enumerate(windows):
        xs = [i + (index - (len(windows) - 1) / 2) * width for i in range(len(SIDECARS) + 1)]
        values = [w["cpu"][n] / w["cpu"]["nginx"] for n in SIDECARS]
        values.append(sum(values))
        bars = cpu_ax.bar(
            xs, values, width, label=f"{w['rate']:,.0f} req/s", color=colors[index % 3]
        )
        cpu_ax.bar_label(bars, fmt="%.2f", fontsize=6)
    cpu_ax.axhline(
        TARGET_TAX, color="#c44e52", linestyle="--", linewidth=1, label=f"target {TARGET_TAX}x"
    )
    cpu_ax.set_xticks(
        range(len(SIDECARS) + 1), [name.replace("-", "-\n") for name in SIDECARS] + ["together"]
    )
    cpu_ax.set_ylabel("CPU s / nginx's CPU s (window + drain)")
    cpu_ax.set_title("CPU beside nginx's, from the cgroups")
    cpu_ax.legend(fontsize=6)
    last = windows[-1]["peak"]
    names = [name.replace("-", "-\n") for name in CONTAINERS] + ["sidecars\ntogether"]
    values = [last[n] for n in CONTAINERS] + [sum(last[n] for n in SIDECARS)]
    bars = mem_ax.bar(names, values, color=["#8c8c8c", *["#64b5cd"] * len(SIDECARS), "#937860"])
    mem_ax.bar_label(bars, fmt="%.0f", fontsize=6)
    mem_ax.axhline(
        TARGET_MIB, color="#c44e52", linestyle="--", linewidth=1, label=f"target {TARGET_MIB} MiB"
    )
    mem_ax.set_ylabel("MiB")
    mem_ax.set_title("peak memory (cgroup) after the last window")
    mem_ax.legend(fontsize=6)
    mem_ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    chart_lib.caption(fig, data["caption"])
    path = chart_lib.save(fig, HERE / "charts" / "tax.png")
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    draw(json.loads((HERE / "charts" / "data.json").read_text()))
