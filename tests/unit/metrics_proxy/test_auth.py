"""Bearer token and basic auth checks, and secret files that rotate."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from sidecars.metrics_proxy.auth import Guard, check_authorization, read_secret, secret_file


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer  s3cret ", True),
        ("Bearer s3cret2", False),
        ("Bearer ", False),
        ("Bearer", False),
        ("s3cret", False),
        ("Basic czNjcmV0", False),  # a token configured, basic not
        (None, False),
        ("", False),
    ],
)
def test_bearer(header: str | None, ok: bool) -> None:
    assert check_authorization(header, token="s3cret") is ok


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (basic("prom", "pa:ss"), True),  # a colon in the password is part of it
        (basic("prom", "wrong"), False),
        (basic("other", "pa:ss"), False),
        ("Basic !!!not-base64", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), False),
        ("Bearer pa:ss", False),
    ],
)
def test_basic(header: str, ok: bool) -> None:
    assert check_authorization(header, basic=("prom", "pa:ss")) is ok


def test_read_secret(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("tok\n")
    assert read_secret(tmp_path / "t") == "tok"
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        read_secret(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        read_secret(tmp_path / "missing")


def test_rotated_secret_works_without_restart_and_a_lost_one_fails_closed(
    tmp_path: Path,
) -> None:
    # Kubernetes' layout: the name is a symlink through ..data, swapped on rotation.
    for version, token in (("v1", "old"), ("v2", "new")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "token").write_text(token)
    os.symlink("v1", tmp_path / "..data")
    os.symlink("..data/token", tmp_path / "token")
    guard = Guard(token_file=secret_file("--bearer-token-file", tmp_path / "token"))
    assert guard.allows("Bearer old")
    os.symlink("v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert guard.allows("Bearer new")
    assert not guard.allows("Bearer old")
    os.unlink(tmp_path / "..data")
    assert not guard.allows("Bearer new")
    assert not guard.allows(None)
    os.symlink("v2", tmp_path / "..data")  # back: accepted again, no restart
    assert guard.allows("Bearer new")


def test_surrounding_whitespace_is_not_part_of_the_secret(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  tok \n\n")
    guard = Guard(token_file=secret_file("--bearer-token-file", tmp_path / "token"))
    assert guard.allows("Bearer tok")
    (tmp_path / "token").write_text("to\nk\n")  # a line break inside: refused, fail closed
    os.utime(tmp_path / "token", ns=(1, 1))
    assert not guard.allows("Bearer tok") and not guard.allows("Bearer to")


def test_open_guard_allows_everything() -> None:
    assert Guard().allows(None)


def test_challenge_names_the_scheme(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("pw")
    assert Guard(
        basic_user="u",
        basic_password_file=secret_file("--basic-auth-password-file", tmp_path / "p"),
    ).challenge() == ('Basic realm="metrics"')
    assert (
        Guard(token_file=secret_file("--basic-auth-password-file", tmp_path / "p")).challenge()
        == 'Bearer realm="metrics"'
    )
