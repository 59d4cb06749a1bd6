"""What nginx serves, beside what is published: kept in ``DEST/..sidecars-state.json`` so a
restarted fetcher knows which version nginx last accepted (its rollback target) and which
content nginx rejected (not published again until the source's content changes).

``..data`` is what nginx loads at its next start or reload; ``served`` is what it loaded last.
They differ only between a publish and the verified reload that follows it, or while nginx is
not running yet. The file is written atomically (runtime/checkpoint.py); an unusable one is set
aside and the fetcher starts as if nothing were known: nginx's next verified reload tells again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sidecars.config_fetcher.publish import DATA, Published
from sidecars.runtime.checkpoint import Loaded, StateFile

STATE_NAME = "..sidecars-state.json"  # a ".." name: never linked, never garbage-collected


@dataclass(frozen=True)
class Rejected:
    digest: str  # the content's digest: the same content is not tried again
    version: str
    reason: str  # nginx's own line


@dataclass(frozen=True)
class ServedState:
    served: Published | None = None
    rejected: Rejected | None = None

    def accept(self, version: Published) -> ServedState:
        return replace(self, served=version)

    def reject(self, rejected: Rejected) -> ServedState:
        return replace(self, rejected=rejected)

    def forget_rejected(self) -> ServedState:
        return replace(self, rejected=None)

    def to_json(self) -> dict[str, Any]:
        served, rejected = self.served, self.rejected
        return {
            "served": None if served is None else vars(served).copy(),
            "rejected": None if rejected is None else vars(rejected).copy(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServedState:
        """Raises KeyError/TypeError on a wrong shape (the caller sets the file aside)."""
        served, rejected = data.get("served"), data.get("rejected")
        return cls(
            served=None
            if served is None
            else Published(version=_name(served["version"]), digest=str(served["digest"])),
            rejected=None
            if rejected is None
            else Rejected(
                digest=str(rejected["digest"]),
                version=_name(rejected["version"]),
                reason=str(rejected["reason"]),
            ),
        )


def _name(raw: object) -> str:
    """A version is a directory name in --dest: refuse anything that could point elsewhere."""
    name = str(raw)
    if not name.startswith("..") or "/" in name or name in ("..", DATA, STATE_NAME):
        raise TypeError(f"not a version name: {name[:80]!r}")
    return name


class ServedStore:
    def __init__(self, dest: Path) -> None:
        self._file = StateFile(dest / STATE_NAME, kind="config-fetcher-served", version=1)

    def load(self) -> tuple[ServedState, str | None]:
        """The state and, when an existing file was not usable, why (it was set aside)."""
        loaded: Loaded = self._file.load()
        if loaded.data is None:
            return ServedState(), loaded.problem
        try:
            return ServedState.from_json(loaded.data), None
        except (KeyError, TypeError, AttributeError) as exc:
            aside = self._file.set_aside(f"state file has a wrong shape ({exc})")
            return ServedState(), aside.problem

    def save(self, state: ServedState) -> None:
        """Raises OSError; the previous file stays intact then."""
        self._file.save(state.to_json())
