"""Protection of ``/metrics``: a bearer token read from a file, or basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sidecars.runtime import logs

log = logging.getLogger("sidecars.metrics_proxy.auth")

_UNREAD = object()


def read_secret(path: Path) -> str:
    """The file's content without surrounding whitespace (secrets are often saved with a final
    newline); ValueError when it cannot be read or is empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not value:
        raise ValueError(f"{path} is empty")
    return value


class SecretFile:
    """A secret re-read whenever its file changes: Kubernetes rotates a mounted Secret by
    swapping a symlink, and the new value must work without a restart. When the file turns
    unreadable, nothing is accepted (fail closed) until it is readable again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: object = _UNREAD
        self._value: str | None = None

    def value(self) -> str | None:
        try:
            st = os.stat(self.path)
            signature: object = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        if signature != self._signature:
            # Read (and log a failure) once per change of the file, not once per scrape.
            self._signature = signature
            try:
                self._value = read_secret(self.path)
            except ValueError as exc:
                log.error("secret unusable, refusing scrapes", extra=logs.kv(error=str(exc)))
                self._value = None
        return self._value


def check_authorization(
    header: str | None,
    *,
    token: str | None = None,
    basic: tuple[str, str] | None = None,
) -> bool:
    """Whether the ``Authorization`` header carries the token or the user and password.
    Comparisons take constant time so the secret cannot be guessed byte by byte."""
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and token is not None:
        return hmac.compare_digest(credentials.encode(), token.encode())
    if scheme.lower() == "basic" and basic is not None:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        user_ok = hmac.compare_digest(user.encode(), basic[0].encode())
        password_ok = hmac.compare_digest(password.encode(), basic[1].encode())
        return user_ok and password_ok
    return False


@dataclass
class Guard:
    """What ``/metrics`` requires; with neither a token nor a user it is open."""

    token_file: SecretFile | None = None
    basic_user: str | None = None
    basic_password_file: SecretFile | None = None

    @property
    def enabled(self) -> bool:
        return self.token_file is not None or self.basic_user is not None

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        token = self.token_file.value() if self.token_file is not None else None
        basic = None
        if self.basic_user is not None and self.basic_password_file is not None:
            password = self.basic_password_file.value()
            if password is not None:
                basic = (self.basic_user, password)
        return check_authorization(header, token=token, basic=basic)

    def challenge(self) -> str:
        scheme = "Bearer" if self.token_file is not None else "Basic"
        return f'{scheme} realm="metrics"'
