"""runtime/secrets.py: a secret file re-read on change (kubelet's symlink swap, an in-place
rewrite), the last good value kept while the file is unusable, and what is refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecars.runtime import secrets
from sidecars.runtime.secrets import FileSecret, file_secret, read_secret_file
from tests.support.secret_volume import SecretVolume

LOGGER = "sidecars.runtime.secrets"


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_kubelet_symlink_swap_is_noticed(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "secret", {"token": "old-token\n"})
    secret = FileSecret("--token-file", volume.path("token"), str)
    assert secret.get() == "old-token"
    volume.update({"token": "new-token\n"})
    assert secret.get() == "new-token"
    volume.update({"token": "third\n"})
    assert secret.get() == "third"


def test_in_place_rewrite_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("aaaa\n")
    secret = FileSecret("--token-file", path, str)
    assert secret.get() == "aaaa"
    path.write_text("bbbbbb\n")
    assert secret.get() == "bbbbbb"


def test_same_size_rewrite_within_one_clock_tick_is_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # File times tick coarsely: a same-size rewrite in the same tick leaves mtime and ctime as
    # they were. Pin them, as such a tick would, to show that a recent file is read again.
    tick = time.time_ns()
    monkeypatch.setattr(
        secrets, "_signature", lambda st: (st.st_dev, st.st_ino, st.st_size, tick, tick)
    )
    path = tmp_path / "token"
    path.write_text("aaaa\n")
    secret = FileSecret("--token-file", path, str)
    with open(path, "r+") as out:  # same inode, same size
        out.write("bbbb\n")
    assert secret.get() == "bbbb"


def test_an_old_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("value")
    os.utime(path, ns=(10**18, 10**18))  # long ago: not racy
    reads = []
    secret = FileSecret("--token-file", path, lambda text: reads.append(text) or text)
    for _ in range(5):
        assert secret.get() == "value"
    assert reads == ["value"]


def test_missing_file_keeps_the_last_value_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    volume = SecretVolume(tmp_path / "secret", {"token": "good"})
    secret = FileSecret("--loki-bearer-token-file", volume.path("token"), str)
    volume.remove_data()  # rotation in progress: the link dangles
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert [secret.get() for _ in range(3)] == ["good"] * 3
        (warning,) = warnings(caplog)
        fields = warning.fields  # type: ignore[attr-defined]
        assert fields["setting"] == "--loki-bearer-token-file"
        assert fields["path"] == str(volume.path("token"))
        assert "No such file" in fields["error"] and "good" not in str(fields)
        volume.update({"token": "rotated"})
        assert secret.get() == "rotated"
        assert any(r.getMessage() == "secret file usable again" for r in caplog.records)


@pytest.mark.parametrize(
    ("content", "why"),
    [("", "is empty"), ("\n", "is empty"), ("a\nb\n", "line break"), (b"\xff\xfe", "UTF-8")],
    ids=["empty", "newline-only", "two-lines", "not-utf8"],
)
def test_an_invalid_rewrite_keeps_the_last_value(tmp_path: Path, content, why: str) -> None:
    path = tmp_path / "token"
    path.write_text("good\n")
    secret = FileSecret("--token-file", path, str)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    assert secret.get() == "good"
    with pytest.raises(ValueError, match=why):
        read_secret_file(path)


def test_one_trailing_newline_is_stripped_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "s"
    for raw, expected in [("a\n", "a"), ("a\r\n", "a"), (" a b ", " a b "), ("a\tb", "a\tb")]:
        path.write_text(raw, newline="")
        assert read_secret_file(path)[0] == expected


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: None, "cannot read .*No such file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.mkfifo(p), "not a regular file"),  # must not hang the open
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),  # endless
        (lambda p: p.write_bytes(b"x" * (64 * 1024 + 1)), "larger than 65536 bytes"),
        (lambda p: p.write_text("a\x00b"), "control character"),
        (lambda p: (p.write_text("x"), p.chmod(0)), None),
    ],
    ids=["missing", "directory", "fifo", "dev-zero", "too-large", "nul", "unreadable"],
)
def test_start_errors_name_the_setting_and_the_file(tmp_path: Path, make, why) -> None:
    path = tmp_path / "secret"
    make(path)
    if why is None:
        if os.geteuid() == 0:
            pytest.skip("root reads a mode-000 file")
        why = "Permission denied"
    with pytest.raises(ValueError, match=why) as caught:
        file_secret("--loki-password-file")(str(path))
    assert str(path) in str(caught.value)


def test_a_parse_error_names_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "header"
    path.write_text("no-colon-here-s3cr3t")

    def parse(text: str) -> str:
        raise ValueError("expected 'Name: value'")

    with pytest.raises(ValueError, match=f"{path}: expected 'Name: value'") as caught:
        FileSecret("--http-header-file", path, parse)
    assert "s3cr3t" not in str(caught.value)


def test_repr_never_shows_the_value(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cr3t")
    assert "s3cr3t" not in repr(FileSecret("--t", path, str))


def test_make_undumpable() -> None:
    # In a child: the test process itself stays dumpable.
    code = (
        "import ctypes; from sidecars.runtime.secrets import make_undumpable; "
        "libc = ctypes.CDLL(None); before = libc.prctl(3, 0, 0, 0, 0); "
        "assert make_undumpable(); print(before, libc.prctl(3, 0, 0, 0, 0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["1", "0"]
