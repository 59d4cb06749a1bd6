"""Shared chart helpers for the benchmarks: small PNGs with the machine and command under them.

matplotlib is a bench-only dependency (``pip install -e '.[bench]'``); a benchmark without it
still writes its RESULTS.md and says the charts were skipped.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any


def pyplot() -> Any | None:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.dpi": 100})
    return plt


def caption(fig: Any, lines: list[str]) -> None:
    """The machine, date and command, small, under the plot (after ``tight_layout``)."""
    wrapped = [part for line in lines for part in textwrap.wrap(line, 160)]
    height = fig.get_figheight()
    text_in = 0.1 * len(wrapped) + 0.08  # 6 pt lines
    fig.text(0.01, 0.04 / height, "\n".join(wrapped), fontsize=6, color="#444444", va="bottom")
    # Room for the caption plus the axes' tick labels and x label (about 0.45 in).
    fig.subplots_adjust(bottom=(text_in + 0.5) / height)


def dump(path: Path, data: dict[str, Any]) -> None:
    """The numbers a chart is drawn from, beside it, so it can be redrawn without a re-run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def save(fig: Any, path: Path) -> Path:
    """As a palette PNG (a few colours: far smaller than RGBA; charts are committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:
        pass
    return path
