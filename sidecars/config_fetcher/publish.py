"""Atomic publication into ``--dest`` on the shared volume.

Why a versioned directory + symlink swap (the layout kubelet uses for ConfigMap volumes) rather
than per-file temp + fsync + rename: a config is usually several files (server blocks, included
snippets, html) that must change together. Per-file renames make each file atomic, but a reader
between two renames sees a mix of old and new files. Here every version is written completely
into its own hidden directory first, then one ``rename(2)`` of the ``..data`` symlink switches
the whole tree::

    DEST/..2026_11_24_05_50_00.123456_ab12cd34/   a complete version (plus ..sidecars.json)
    DEST/..data -> ..2026_11_24_05_50_00.123456_ab12cd34
    DEST/conf.d -> ..data/conf.d                  user-visible names go through ..data
    DEST/html   -> ..data/html

A reader that resolves ``DEST/..data`` once and reads below it sees exactly one version. Previous
versions are kept (``--keep-versions``) so a reader that resolved an older one can finish; a
failed write leaves only a ``..tmp-*`` directory, which is removed and never visible through
``..data``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sidecars.config_fetcher.bundle import Bundle, top_level_names
from sidecars.config_fetcher.errors import PublishError, publish_error

DATA = "..data"
MANIFEST = "..sidecars.json"
_TMP_PREFIX = "..tmp-"
_VERSION_PREFIX = ".."


@dataclass(frozen=True)
class Published:
    version: str
    digest: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)  # not subject to the umask, unlike the mode given to open()
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: create a temp symlink, rename it over. The temp
    name is fixed-length (a digest of the name): a name of NAME_MAX bytes, which the member
    checks accept, must not make it too long."""
    tag = hashlib.sha256(os.fsencode(link.name)).hexdigest()[:16]
    tmp = link.with_name(f"{_TMP_PREFIX}link-{tag}-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class Publisher:
    def __init__(self, dest: Path, keep_versions: int = 2) -> None:
        self.dest = dest
        self.keep_versions = keep_versions
        # Versions garbage collection never removes, whatever --keep-versions says: the one
        # nginx serves (the rollback target while a new version is being verified).
        self.pinned: set[str] = set()

    def prepare(self) -> None:
        """Create ``dest`` if needed, check it is writable, clear leftovers of a crashed run."""
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.dest, prefix=_TMP_PREFIX + "probe-"):
                pass
        except OSError as exc:
            raise PublishError(f"destination {self.dest} is not writable: {exc}") from None
        for child in self.dest.iterdir():
            if child.name.startswith(_TMP_PREFIX):
                self._remove(child)

    def current(self) -> Published | None:
        """What ``..data`` points at now, from its manifest; None before the first publish."""
        try:
            version = os.readlink(self.dest / DATA)
            manifest = json.loads((self.dest / version / MANIFEST).read_text())
            return Published(version=version, digest=str(manifest["digest"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def swapped_at(self) -> float | None:
        """When ``..data`` last changed (the symlink's own mtime: each swap creates it anew)."""
        try:
            return os.lstat(self.dest / DATA).st_mtime
        except OSError:
            return None

    def repair(self) -> list[str]:
        """Make the top-level links agree with ``..data`` (a crash between the swap and the
        links leaves new names missing and removed ones dangling). Returns what it changed; raises
        PublishError."""
        version = self._data_target()
        if version is None:
            return []
        try:
            return self._link_names(self._version_names(version))
        except OSError as exc:
            raise publish_error(f"repairing the links in {self.dest}", exc) from None

    def switch_to(self, version: str) -> None:
        """Point ``..data`` back at an earlier, complete version (a rollback), links included."""
        if not (self.dest / version / MANIFEST).is_file():
            raise PublishError(f"cannot switch {self.dest}/{DATA} to {version}: it is not on disk")
        try:
            _replace_symlink(self.dest / DATA, version)
            self._link_names(self._version_names(version))
            _fsync_dir(self.dest)
        except OSError as exc:
            raise PublishError(f"switching {self.dest}/{DATA} to {version}: {exc}") from None

    def _data_target(self) -> str | None:
        try:
            return os.readlink(self.dest / DATA)
        except OSError:
            return None

    def _version_names(self, version: str) -> set[str]:
        try:
            return {c.name for c in (self.dest / version).iterdir() if not c.name.startswith("..")}
        except OSError:
            return set()

    def _link_names(self, names: set[str]) -> list[str]:
        """Create the missing ``NAME -> ..data/NAME`` links and remove ours that name nothing in
        ``names``; never touches a path we did not create."""
        changed = []
        for name in sorted(names):
            link = self.dest / name
            if not link.is_symlink() and not link.exists():
                _replace_symlink(link, f"{DATA}/{name}")
                changed.append(f"linked {name}")
        for child in sorted(self.dest.iterdir()):
            if (
                child.name not in names
                and not child.name.startswith("..")
                and child.is_symlink()
                and os.readlink(child) == f"{DATA}/{child.name}"
            ):
                child.unlink()
                changed.append(f"unlinked {child.name}")
        return changed

    def publish(self, bundle: Bundle, digest: str, meta: dict[str, object]) -> Published:
        self._check_foreign(bundle)
        now_ns = time.time_ns()
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now_ns // 1_000_000_000))
        version = f"{_VERSION_PREFIX}{stamp}.{now_ns % 1_000_000_000:09d}_{digest[:12]}"
        tmp = Path(tempfile.mkdtemp(dir=self.dest, prefix=_TMP_PREFIX))
        try:
            self._write_tree(tmp, bundle)
            manifest = {"digest": digest, "version": version, **meta}
            _write_file(tmp / MANIFEST, json.dumps(manifest, indent=2).encode(), 0o644)
            os.chmod(tmp, 0o755)
            _fsync_dir(tmp)
            os.rename(tmp, self.dest / version)
        except OSError as exc:
            self._remove(tmp)
            raise publish_error(f"writing {self.dest}", exc) from None
        try:
            # The single atomic step: after this rename readers see the new version.
            _replace_symlink(self.dest / DATA, version)
            self._sync_top_level(top_level_names(bundle))
            _fsync_dir(self.dest)
        except OSError as exc:
            raise publish_error(f"switching {self.dest}/{DATA} to {version}", exc) from None
        self._collect_garbage(keep={version})
        return Published(version=version, digest=digest)

    def _check_foreign(self, bundle: Bundle) -> None:
        """Refuse to shadow files we did not create (e.g. a --dest that already had content)."""
        for name in top_level_names(bundle):
            path = self.dest / name
            if path.is_symlink() and os.readlink(path) == f"{DATA}/{name}":
                continue
            if path.exists() or path.is_symlink():
                raise PublishError(
                    f"{path} exists and was not published by config-fetcher; "
                    "refusing to replace it",
                    transient=False,  # the same on every attempt
                )

    @staticmethod
    def _write_tree(root: Path, bundle: Bundle) -> None:
        """Write every entry below ``root`` (a fresh temp dir), any depth. Parents are made
        before their children whether or not the bundle lists them (a bundle from members.py
        always does), then every directory is fsynced, deepest first, so the rename that
        follows publishes a tree that is on disk whole."""
        dirs: set[str] = set()
        # Sorting by components puts every parent before its children ("a/b" < "a-b" as text
        # but the tuple ("a", "b") sorts after ("a",) as it should).
        for path in sorted(bundle, key=lambda p: p.split("/")):
            entry = bundle[path]
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in dirs:
                    # Only a file or symlink of the bundle can be there already: EEXIST, so
                    # nothing is ever written through a link.
                    (root / parent).mkdir(mode=0o755)
                    dirs.add(parent)
            target = root / path
            if entry.kind == "dir":
                if path not in dirs:
                    target.mkdir(mode=0o755)
                    dirs.add(path)
                os.chmod(target, entry.mode)
            elif entry.kind == "symlink":
                os.symlink(entry.target, target)
            else:
                _write_file(target, entry.data, entry.mode)
        for path in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            _fsync_dir(root / path)

    def _sync_top_level(self, names: set[str]) -> None:
        """The links step of a publish, after the swap (the crash tests cut here)."""
        self._link_names(names)

    def _collect_garbage(self, keep: set[str]) -> None:
        versions = sorted(
            c.name
            for c in self.dest.iterdir()
            if c.name.startswith(_VERSION_PREFIX)
            and c.name not in (DATA,)
            and not c.name.startswith(_TMP_PREFIX)
            and c.is_dir()
            and not c.is_symlink()
        )
        old = [v for v in versions if v not in keep and v not in self.pinned]
        for name in old[: max(0, len(old) - self.keep_versions)]:
            self._remove(self.dest / name)

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
