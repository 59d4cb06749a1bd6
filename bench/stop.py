"""SIGTERM (`timeout`, a CI runner, kill) unwinds a bench like Ctrl-C does.

Python's default SIGTERM kills the interpreter without running ``finally`` blocks or context
managers' exits, so the nginx, exporters and shippers a bench started were left running
(orphans of ``timeout 600 python -m bench...`` were found on the shared machine).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    del frame
    sys.exit(128 + signum)


def unwind_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _exit)
