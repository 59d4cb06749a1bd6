"""The metrics-proxy's results as PNG charts under bench/metrics_proxy/charts/ (bench/charts.py).

Scrapes/s and CPU per 1,000 scrapes against the exporter, and the access-log follower's cost
per line beside the earlier measurements and the target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import charts

OUT = Path(__file__).resolve().parent / "charts"
DATA = OUT / "data.json"
PER_LINE_TARGET_US = 5.0  # issue 12
# Earlier measurements of the same case (RESULTS.md history), shown for scale.
EARLIER_US = [("issue 12 (before)", 27.7), ("2026-11-24 run", 12.7)]


def render(
    summary: dict[tuple[str, int], tuple[float, float, float, float]],
    per_line_us: float,
    caption: list[str],
) -> list[Path]:
    """``summary``: (tool, connections) -> (scrapes/s, p50, p99, CPU s per 1,000 scrapes)."""
    charts.dump(
        DATA,
        {
            "summary": [[tool, c, *values] for (tool, c), values in summary.items()],
            "per_line_us": per_line_us,
            "caption": caption,
        },
    )
    plt = charts.pyplot()
    if plt is None:
        print("charts skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    return [_scrapes(plt, summary, caption), _per_line(plt, per_line_us, caption)]


def redraw() -> list[Path]:
    """The charts again from the last run's numbers (``python -m bench.metrics_proxy.charts``)."""
    data = json.loads(DATA.read_text())
    summary = {(tool, c): tuple(values) for tool, c, *values in data["summary"]}
    return render(summary, data["per_line_us"], data["caption"])


def _scrapes(plt: Any, summary: dict, caption: list[str]) -> Path:
    tools = list(dict.fromkeys(tool for tool, _ in summary))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for ax, index, title in (
        (axes[0], 0, "scrapes/s (higher is better)"),
        (axes[1], 3, "CPU s per 1,000 scrapes (lower is better)"),
    ):
        width = 0.38
        for offset, tool in enumerate(tools):
            values = [summary[(tool, c)][index] for c in (1, 10)]
            xs = [x + (offset - 0.5) * width for x in range(2)]
            colour = "#8c8c8c" if "exporter" in tool else "#1f77b4"
            ax.bar(xs, values, width, label=tool, color=colour)
            for x, value in zip(xs, values, strict=True):
                ax.text(x, value, f"{value:,.0f}" if index == 0 else f"{value:.3f}",
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
        ax.set_xticks(range(2), ["concurrency 1", "concurrency 10"])
        ax.set_title(title)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    charts.caption(fig, caption)
    return charts.save(fig, OUT / "scrapes.png")


def _per_line(plt: Any, per_line_us: float, caption: list[str]) -> Path:
    fig, ax = plt.subplots(figsize=(9.5, 2.8))
    labels = [label for label, _ in EARLIER_US] + ["this run"]
    values = [value for _, value in EARLIER_US] + [per_line_us]
    colours = ["#c7c7c7"] * len(EARLIER_US) + ["#1f77b4"]
    ax.barh(range(len(values)), values, color=colours)
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    for index, value in enumerate(values):
        ax.text(value, index, f" {value:.1f} µs", va="center", fontsize=7)
    ax.axvline(PER_LINE_TARGET_US, color="#d62728", ls="--", lw=0.8)
    ax.text(PER_LINE_TARGET_US, len(values) - 0.4, " target", color="#d62728", fontsize=7)
    ax.set_xlabel("access-log follower: process CPU per nginx request (µs, lower is better)")
    ax.margins(x=0.12)
    fig.tight_layout()
    charts.caption(fig, caption)
    return charts.save(fig, OUT / "access_log_per_line.png")


if __name__ == "__main__":
    for written in redraw():
        print(f"wrote {written} ({written.stat().st_size / 1000:.0f} kB)")
