"""Keep README.md's settings tables generated from the settings classes.

``python -m sidecars.docs`` rewrites every block between ``<!-- settings:PART -->`` and
``<!-- /settings:PART -->`` in README.md; ``--check`` exits 1 when one is out of date (a unit
test runs that, so a new setting cannot land undocumented).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from sidecars.__main__ import PARTS
from sidecars.runtime.lifecycle import CommonSettings
from sidecars.runtime.settings import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def settings_class(part: str) -> type:
    """The part's settings: the CommonSettings subclass its ``settings`` module defines."""
    module = importlib.import_module(PARTS[part].rsplit(".", 1)[0] + ".settings")
    (cls,) = (
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, CommonSettings)
        and obj is not CommonSettings
        and obj.__module__ == module.__name__
    )
    return cls


def render(text: str) -> str:
    for part in PARTS:
        start, end = f"<!-- settings:{part} -->", f"<!-- /settings:{part} -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if start in text:
            table = markdown_table(settings_class(part), part)
            block = f"{start}\n{table}\n{end}"
            text = pattern.sub(lambda _, block=block: block, text)
    return text


def main(argv: list[str]) -> int:
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md settings tables are out of date: run python -m sidecars.docs")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
