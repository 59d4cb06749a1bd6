"""Protection of ``/metrics``: a bearer token read from a file, or basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

from sidecars.runtime.secrets import FileSecret, read_secret_file


def read_secret(path: Path) -> str:
    """The file's content without surrounding whitespace (secrets are often saved with a final
    newline); ValueError when it cannot be read, is empty or is no single-line secret."""
    return read_secret_file(path, strip=True)[0]


def secret_file(setting: str, path: Path) -> FileSecret[str]:
    """A secret re-read whenever its file changes: Kubernetes rotates a mounted Secret by
    swapping a symlink, and the new value must work without a restart. While the file is
    unusable nothing is accepted (fail closed: ``Guard`` uses ``usable()``) until it is usable
    again. ValueError when it is unusable now."""
    return FileSecret(setting, path, str, strip=True, fail_closed=True)


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

    token_file: FileSecret[str] | None = None
    basic_user: str | None = None
    basic_password_file: FileSecret[str] | None = None

    @property
    def enabled(self) -> bool:
        return self.token_file is not None or self.basic_user is not None

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        token = self.token_file.usable() if self.token_file is not None else None
        basic = None
        if self.basic_user is not None and self.basic_password_file is not None:
            password = self.basic_password_file.usable()
            if password is not None:
                basic = (self.basic_user, password)
        return check_authorization(header, token=token, basic=basic)

    def challenge(self) -> str:
        scheme = "Bearer" if self.token_file is not None else "Basic"
        return f'{scheme} realm="metrics"'
