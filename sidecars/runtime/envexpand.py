"""``${VAR}`` in setting values (labels, hostnames): how the Downward API's pod name and
namespace reach a part. An unset variable is an error, never an empty value."""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def references(template: str) -> list[str]:
    """The variable names ``template`` refers to; a malformed ``${...}`` is a ValueError, so a
    setting can be checked at start. A lone ``$`` stays literal."""
    names = []
    for match in _REFERENCE.finditer(template):
        name = match.group(1)
        if not _NAME.fullmatch(name):
            raise ValueError(f"${{{name}}} is not a valid variable reference")
        names.append(name)
    return names


def expand(template: str, environ: Mapping[str, str]) -> str:
    missing = [name for name in references(template) if name not in environ]
    if missing:
        raise ValueError(f"${{{missing[0]}}} is not set in the environment")
    return _REFERENCE.sub(lambda match: str(environ[match.group(1)]), template)
