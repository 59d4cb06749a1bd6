"""Shared chart helpers for the benchmarks: small PNGs with the machine and command under them.

matplotlib is a bench-only dependency (``pip install -e '.[bench]'``); a benchmark without it
still writes its RESULTS.md and says the charts were skipped.
"""

from __future__ import annotations

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
    """The machine, date and command, small, under the plot."""
    wrapped = [part for line in lines for part in textwrap.wrap(line, 150)]
    fig.text(0.01, 0.01, "\n".join(wrapped), fontsize=6, color="#444444", va="bottom")
    fig.subplots_adjust(bottom=0.09 + 0.028 * len(wrapped))


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
