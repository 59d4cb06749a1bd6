"""The member checks every content tree passes, whether it came from an archive or a directory
(pure logic, no I/O): one checker, so both kinds of source obey the same rules.

Rules (the README's "archive members" list is this module):

- names are relative, normalised, valid UTF-8, without ``..`` components, NUL bytes or the
  reserved top-level prefix ``..``; at most ``MAX_PATH_BYTES`` long, ``MAX_NAME_BYTES`` per
  component, ``MAX_DEPTH`` components deep;
- at most ``Limits.max_entries`` entries (implicit parent directories included), and file data
  within ``Limits.max_total_bytes``, checked from the size a header (or stat) declares before any
  data is read;
- a name appears once (a directory may repeat as a directory);
- parents are directories, never files or symlinks (a symlinked parent would redirect later
  writes);
- a symlink's target is relative, and resolved through the tree's own links, as the kernel
  would resolve it once published (at most ``MAX_HOPS`` links followed, a loop refused), it
  ends inside the tree: ``normpath`` of the target text alone is not enough, since ``a/..`` is
  ``.`` as text but the parent of wherever ``a`` leads once ``a`` is a link;
- a hard link copies an earlier regular file (its data counts again toward the total);
- nothing else (devices, fifos, sockets, sparse files) is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sidecars.config_fetcher.errors import VerifyError

RESERVED_PREFIX = ".."  # kubelet-style layout names (..data, ..<version>) live beside the content
MAX_ENTRIES = 10_000
MAX_PATH_BYTES = 1024  # well under PATH_MAX (4096) once --dest and the version dir are prefixed
MAX_NAME_BYTES = 255  # NAME_MAX of every Linux filesystem
MAX_DEPTH = 32
# The kernel follows at most 40 links in one lookup (ELOOP); the published layout's own
# top-level link and ..data take two of them, so 32 leaves every accepted link resolvable.
MAX_HOPS = 32


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Literal["file", "dir", "symlink"]
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink target, relative and resolving inside the bundle


@dataclass(frozen=True, slots=True)
class Limits:
    max_total_bytes: int
    max_entries: int = MAX_ENTRIES
    total_setting: str = "--max-unpacked-bytes"  # named in the refusal


def check_name(name: str, what: str = "archive member") -> str:
    """Normalise a member name or raise VerifyError naming the problem."""
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise VerifyError(f"{what} {name!r} has an absolute path")
    if "\0" in name:
        raise VerifyError(f"{what} {name!r} contains a NUL byte")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise VerifyError(f"{what} {name!r} is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise VerifyError(f"{what} {name[:60]!r}... is longer than {MAX_PATH_BYTES} bytes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise VerifyError(f"{what} {name!r} has an empty path")
    if ".." in parts:
        raise VerifyError(f"{what} {name!r} escapes the destination (contains '..')")
    if parts[0].startswith(RESERVED_PREFIX):
        raise VerifyError(f"{what} {name!r} uses the reserved prefix '..'")
    if len(parts) > MAX_DEPTH:
        raise VerifyError(f"{what} {name!r} is more than {MAX_DEPTH} directories deep")
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise VerifyError(f"{what} {name!r} has a component longer than {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


def check_target(path: str, target: str, what: str = "archive member") -> str:
    """The text of a symlink target: relative, UTF-8, bounded (resolution comes later)."""
    if not target or target.startswith("/"):
        raise VerifyError(f"{what} {path!r} is a symlink to absolute path {target!r}")
    if "\0" in target:
        raise VerifyError(f"{what} {path!r} is a symlink whose target contains a NUL byte")
    try:
        size = len(target.encode("utf-8"))
    except UnicodeEncodeError:
        raise VerifyError(f"{what} {path!r} is a symlink whose target is not UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise VerifyError(f"{what} {path!r} is a symlink to a target over {MAX_PATH_BYTES} bytes")
    return target


class TreeBuilder:
    """Collects the members of one content tree, refusing each as early as its header allows;
    ``finish()`` runs the checks that need the whole tree (parents, symlink resolution)."""

    def __init__(self, limits: Limits, what: str = "archive member") -> None:
        self.limits = limits
        self.what = what
        self.entries: dict[str, Entry] = {}
        self.total = 0
        self._members = 0

    def admit(self, name: str, size: int = 0) -> str:
        """Check a member from its header alone (before any data is read): name, count, size.
        Returns the normalised path."""
        self._members += 1
        if self._members > self.limits.max_entries:
            raise VerifyError(f"{self.what}s: more than {self.limits.max_entries} entries")
        path = check_name(name, self.what)
        self._reserve(path, size)
        return path

    def _reserve(self, path: str, size: int) -> None:
        if size < 0 or self.total + size > self.limits.max_total_bytes:
            raise VerifyError(
                f"{self.what} {path!r} ({size} bytes) takes the content past "
                f"{self.limits.total_setting} {self.limits.max_total_bytes}"
            )
        self.total += size

    def _put(self, path: str, entry: Entry) -> None:
        existing = self.entries.get(path)
        if existing is not None and not (existing.kind == entry.kind == "dir"):
            raise VerifyError(f"{self.what} {path!r} appears more than once")
        self.entries[path] = entry

    def add_dir(self, path: str) -> None:
        self._put(path, Entry("dir", mode=0o755))

    def add_file(self, path: str, data: bytes, executable: bool = False) -> None:
        self._put(path, Entry("file", data, mode=0o755 if executable else 0o644))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(path, Entry("symlink", target=check_target(path, target, self.what), mode=0o777))

    def add_hardlink(self, path: str, target_name: str) -> None:
        """A hard link becomes a copy of an earlier regular file (the bytes object is shared in
        memory; on disk it is written twice, so it counts toward the total again)."""
        try:
            target = check_name(target_name, self.what)
        except VerifyError as exc:
            raise VerifyError(f"{self.what} {path!r} is a hard link to a bad name: {exc}") from None
        source = self.entries.get(target)
        if source is None or source.kind != "file":
            raise VerifyError(
                f"{self.what} {path!r} is a hard link to {target_name!r}, "
                "which is not an earlier regular file"
            )
        self._reserve(path, len(source.data))
        self._put(path, source)

    def finish(self) -> dict[str, Entry]:
        entries = self.entries
        if not any(e.kind == "file" for e in entries.values()):
            raise VerifyError(f"{self.what}s: no files")
        for path in list(entries):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                existing = entries.get(parent)
                if existing is None:
                    if len(entries) >= self.limits.max_entries:
                        raise VerifyError(
                            f"{self.what}s: more than {self.limits.max_entries} entries "
                            "(implicit parent directories included)"
                        )
                    entries[parent] = Entry("dir", mode=0o755)
                elif existing.kind != "dir":
                    raise VerifyError(
                        f"{self.what} {path!r} lies under {parent!r}, which is not a directory"
                    )
        _Resolver(entries, self.what).check_all()
        return entries


class _Resolver:
    """Resolve every symlink of a tree the way the kernel will once it is published.

    The walk keeps the physical path as a stack of components: a component that is a link is
    replaced by where that link resolves (each link is resolved once and remembered, with the
    number of links its resolution followed), ``..`` pops the physical parent. A name that is
    not in the tree continues lexically, the cautious reading: ``missing/../..`` counts as an
    escape even though the kernel would stop at ``missing``.
    """

    def __init__(self, entries: dict[str, Entry], what: str) -> None:
        self.entries = entries
        self.what = what
        self._done: dict[str, tuple[tuple[str, ...], int]] = {}
        self._active: set[str] = set()

    def check_all(self) -> None:
        for path, entry in self.entries.items():
            if entry.kind == "symlink":
                self._resolve(path, path)

    def _resolve(self, link: str, origin: str) -> tuple[tuple[str, ...], int]:
        known = self._done.get(link)
        if known is not None:
            return known
        if link in self._active:
            raise VerifyError(f"{self.what} {origin!r} is a symlink loop (through {link!r})")
        self._active.add(link)
        parent = tuple(link.split("/")[:-1])
        parts, hops = self._walk(parent, self.entries[link].target, origin)
        hops += 1
        if hops > MAX_HOPS:
            raise VerifyError(
                f"{self.what} {origin!r} is a symlink that follows more than {MAX_HOPS} links"
            )
        self._active.discard(link)
        self._done[link] = (parts, hops)
        return parts, hops

    def _walk(
        self, start: tuple[str, ...], target: str, origin: str
    ) -> tuple[tuple[str, ...], int]:
        stack = list(start)
        exists = len(stack)  # how many leading components are known directories of the tree
        hops = 0
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise VerifyError(
                        f"{self.what} {origin!r} is a symlink pointing outside the destination "
                        f"(resolved through the tree's own links)"
                    )
                stack.pop()
                exists = min(exists, len(stack))
                continue
            stack.append(part)
            if exists != len(stack) - 1:
                continue  # below a name the tree does not have: nothing here can be a link
            entry = self.entries.get("/".join(stack))
            if entry is None or entry.kind == "file":
                continue
            if entry.kind == "dir":
                exists = len(stack)
                continue
            resolved, followed = self._resolve("/".join(stack), origin)
            hops += followed
            if hops > MAX_HOPS:
                raise VerifyError(
                    f"{self.what} {origin!r} is a symlink that follows more than {MAX_HOPS} links"
                )
            stack = list(resolved)
            exists = self._existing_depth(stack)
        return tuple(stack), hops

    def _existing_depth(self, stack: list[str]) -> int:
        depth = 0
        while depth < len(stack):
            entry = self.entries.get("/".join(stack[: depth + 1]))
            if entry is None or entry.kind != "dir":
                break
            depth += 1
        return depth
