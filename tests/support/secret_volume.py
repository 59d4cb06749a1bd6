"""A directory laid out and updated the way kubelet's AtomicWriter does a Secret volume.

    ROOT/..2026_12_01_08_00_00.000000001/token   one complete version of the Secret's keys
    ROOT/..data -> ..2026_12_01_08_00_00.000000001
    ROOT/token  -> ..data/token

``update()`` writes a new version directory, points a temporary symlink at it, renames that over
``..data`` (the one atomic step), adds or removes the user-visible links, then deletes the old
version: a reader sees all-old or all-new, and a path opened through ``..data`` changes inode.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path


class SecretVolume:
    def __init__(self, root: Path, data: Mapping[str, str]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions = 0
        self.update(data)

    def path(self, key: str) -> Path:
        return self.root / key

    def update(self, data: Mapping[str, str]) -> None:
        self.versions += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        version = self.root / f"..{stamp}.{self.versions:09d}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_text(value)
        data_link = self.root / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.rename(tmp, data_link)
        for key in data:
            if not self.path(key).is_symlink():
                self.path(key).symlink_to(f"..data/{key}")
        for entry in self.root.iterdir():
            if not entry.name.startswith("..") and entry.name not in data:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.root / old)

    def remove_data(self) -> None:
        """What a reader may meet mid-rotation or after the Secret was deleted: ``..data`` gone,
        so every key's link dangles."""
        (self.root / "..data").unlink()
