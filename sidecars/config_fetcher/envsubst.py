"""Opt-in ``${VAR}`` substitution in text files (pure logic).

Only names matching the filter (default: upper-case, like env vars) are touched, so nginx's
own ``${host}``-style variables pass through untouched. A matching name that is not set is an
error naming the file and the variable, rather than silently becoming an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sidecars.config_fetcher.bundle import Bundle, Entry
from sidecars.config_fetcher.errors import VerifyError

DEFAULT_FILTER = r"^[A-Z_][A-Z0-9_]*$"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def substitute_text(
    text: str, env: Mapping[str, str], name_filter: re.Pattern[str], where: str
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name_filter.search(name):
            return match.group(0)
        if name not in env:
            raise VerifyError(f"--env-subst: ${{{name}}} in {where} is not set in the environment")
        return env[name]

    return _REFERENCE.sub(replace, text)


def substitute(
    bundle: Bundle, env: Mapping[str, str], name_filter: re.Pattern[str]
) -> dict[str, Entry]:
    """Substitute in every text file of ``bundle``; binary files are left as they are."""
    result: dict[str, Entry] = {}
    for path, entry in bundle.items():
        if entry.kind == "file" and is_text(entry.data):
            text = substitute_text(entry.data.decode("utf-8"), env, name_filter, path)
            entry = Entry("file", text.encode("utf-8"), mode=entry.mode)
        result[path] = entry
    return result
