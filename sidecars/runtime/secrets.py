"""Secrets read from files (a mounted Kubernetes Secret), re-read when the file changes.

A value given as an env var or a flag can be read by any process of the Pod that shares the PID
namespace and the UID (``/proc/<pid>/environ``, ``/proc/<pid>/cmdline``); a file on a Secret
volume mounted into one container is only in that container's mount namespace. kubelet rotates a
Secret volume by swapping its ``..data`` symlink to a new directory; users rewrite files in
place. Both change what ``stat`` of the path reports (a new inode, or a new mtime/ctime/size),
so one ``stat`` per use notices either, and the file is read again only then.

A file that is missing, unreadable or invalid at start is a settings error naming the setting
and the file. At run time (a rotation in progress, the file briefly gone or half-written) the
last good value is kept and the trouble is logged once, not per request.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from sidecars.runtime.logs import kv

log = logging.getLogger("sidecars.runtime.secrets")

T = TypeVar("T")

MAX_SECRET_BYTES = 64 * 1024  # a token, a password, a header: far less; /dev/zero is refused
_RACY_NS = 2 * 10**9
# Bytes that would end or split an HTTP header line, or that no credential holds.
_FORBIDDEN = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}


def read_secret_file(
    path: Path, max_bytes: int = MAX_SECRET_BYTES, *, strip: bool = False
) -> tuple[str, tuple[int, ...]]:
    """The file's text without one trailing newline (``\\n`` or ``\\r\\n``; ``strip``: without
    any surrounding whitespace), and the signature of what was read. ValueError (naming the
    file) when it is missing, not a regular file, unreadable, larger than ``max_bytes``, not
    UTF-8, empty, or holds control characters."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        try:
            data = os.read(fd, max_bytes + 1)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    text = text.strip() if strip else text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{path} is empty")
    if not _FORBIDDEN.isdisjoint(text):
        raise ValueError(
            f"{path} holds a control character or a line break (one value, one line, please)"
        )
    return text, _signature(st)


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileSecret(Generic[T]):
    """A value read from ``path`` and parsed by ``parse`` (a ValueError there makes the file
    invalid); ``get()`` re-reads it when the file changed. ``setting`` names it in errors.

    ``get()`` keeps the last good value while the file is unusable (a sink's credential: a
    rotation in progress must not drop batches); ``usable()`` is None meanwhile (a credential
    that guards something: fail closed). ``strip``: surrounding whitespace is not part of the
    value."""

    def __init__(
        self,
        setting: str,
        path: Path,
        parse: Callable[[str], T],
        *,
        strip: bool = False,
        fail_closed: bool = False,
    ) -> None:
        self.setting = setting
        self.path = path
        self._parse = parse
        self._strip = strip
        self._fail_closed = fail_closed  # only what is logged: usable() is the caller's choice
        self._trouble: str | None = None  # the error logged last, so it is logged once
        self._value, self._signature, self._racy = self._read()

    def _read(self) -> tuple[T, tuple[int, ...], bool]:
        text, signature = read_secret_file(self.path, strip=self._strip)
        try:
            value = self._parse(text)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        # File times tick coarsely (a jiffy): a rewrite of the same size within the same tick
        # leaves the signature as it was. Until the file is older than that, read it each time
        # (what git calls "racily clean").
        racy = time.time_ns() - signature[3] < _RACY_NS
        return value, signature, racy

    def get(self) -> T:
        """The current value: the file's, or the last good one while the file is unusable."""
        try:
            signature = _signature(os.stat(self.path))
        except OSError as exc:
            self._keep_last(f"cannot read {self.path}: {exc.strerror or exc}")
            return self._value
        if signature == self._signature and not self._racy and self._trouble is None:
            return self._value
        try:
            value, self._signature, self._racy = self._read()
        except ValueError as exc:
            self._keep_last(str(exc))
            return self._value
        fields = kv(setting=self.setting, path=str(self.path))
        if self._trouble is not None:
            log.info("secret file usable again", extra=fields)
            self._trouble = None
        elif value != self._value:
            log.info("secret file changed", extra=fields)
        self._value = value
        return value

    def usable(self) -> T | None:
        """The file's current value; None while it is unusable."""
        value = self.get()
        return None if self._trouble is not None else value

    def _keep_last(self, error: str) -> None:
        # The signature is left as it was, so every use tries again until a read succeeds.
        if error != self._trouble:
            log.warning(
                "secret file unusable, refusing every request until it is usable again"
                if self._fail_closed
                else "secret file unusable, keeping the last good value",
                extra=kv(setting=self.setting, path=str(self.path), error=error),
            )
            self._trouble = error

    def __repr__(self) -> str:  # never the value
        return f"FileSecret({self.setting}={str(self.path)!r})"


def file_secret(
    setting: str, parse: Callable[[str], T] | None = None
) -> Callable[[str], FileSecret[T]]:
    """A settings parser: the raw value is a path, read (and checked) at once."""

    def load(raw: str) -> FileSecret[T]:
        return FileSecret(setting, Path(raw.strip()), parse or (lambda text: text))  # type: ignore[arg-type,return-value]

    load.__name__ = "file_secret"
    return load


_PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """Mark this process non-dumpable: its ``/proc/<pid>/environ``, ``root``, ``cwd``, ``fd``,
    ``mem`` then belong to root, so another process of the same UID (nginx, under
    ``shareProcessNamespace: true``) can no longer read its environment or walk into its
    filesystem (where a Secret volume is mounted). ``cmdline`` stays world-readable: secrets
    never belong in flags. False where prctl is not available (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return False
