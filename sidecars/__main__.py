"""One CLI for every part: ``sidecars <part> [flags]`` (also ``python -m sidecars <part>``)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from sidecars import __version__

# part name -> module with ``main(argv, environ) -> int``; imported lazily so one part's
# start-up never pays for another's imports.
PARTS: dict[str, str] = {
    "config-fetcher": "sidecars.config_fetcher.main",
    "log-shipper": "sidecars.log_shipper.main",
    "metrics-proxy": "sidecars.metrics_proxy.main",
}
# Tools beside the parts (same ``main(argv, environ)`` shape).
COMMANDS: dict[str, str] = {"inject": "sidecars.inject.main"}


def _usage() -> str:
    lines = [
        "usage: sidecars <part> [flags]   (sidecars <part> --help for its settings)",
        "",
        "parts:",
    ]
    lines += [f"  {name}" for name in PARTS]
    lines += ["", "commands:", "  inject  add the parts to your manifests (sidecars inject --help)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(__version__)
        return 0
    part = args[0]
    if part in COMMANDS:
        return int(importlib.import_module(COMMANDS[part]).main(args[1:], os.environ))
    if part not in PARTS:
        print(f"sidecars: unknown part {part!r}; one of: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(PARTS[part])
    return int(module.main(args[1:], os.environ))


if __name__ == "__main__":
    sys.exit(main())
