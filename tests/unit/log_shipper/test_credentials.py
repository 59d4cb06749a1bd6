"""Credential settings of the log-shipper: every secret also as a file, one source per
credential (exit 2 naming both), bad files refused at start naming the setting and the file,
and the Authorization the sinks send worked out again after a rotation."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecars.log_shipper.main import sink_options
from sidecars.log_shipper.settings import PART, Settings
from sidecars.log_shipper.sinks.http import HttpSink
from sidecars.log_shipper.sinks.loki import LokiSink
from sidecars.runtime.settings import SettingsError, load
from tests.support.secret_volume import SecretVolume

REPO = Path(__file__).resolve().parents[3]


def settings(*flags: str, env: dict[str, str] | None = None, sink: str = "loki=http://l:3100"):
    return load(Settings, PART, ["--state-file", "/s", "--sink", sink, *flags], env or {})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_headers(sink: LokiSink | HttpSink) -> dict[str, str]:
    return sink._credentials.request_headers()


@pytest.fixture
def secrets(tmp_path: Path) -> SecretVolume:
    return SecretVolume(
        tmp_path / "secrets",
        {
            "token": "tok-1\n",
            "password": "pw-1\n",
            "header": "Authorization: Bearer hdr-1\n",
            "api-key": "X-Api-Key: key-1\n",
        },
    )


def test_loki_bearer_token_file_follows_a_rotation(secrets: SecretVolume) -> None:
    s = settings("--loki-bearer-token-file", str(secrets.path("token")))
    sink = LokiSink("http://l:3100", sink_options(s, {}))
    assert request_headers(sink) == {"Authorization": "Bearer tok-1"}
    secrets.update({"token": "tok-2\n"})
    assert request_headers(sink) == {"Authorization": "Bearer tok-2"}


def test_loki_password_file_with_the_user_from_the_url_or_the_flag(secrets: SecretVolume) -> None:
    path = str(secrets.path("password"))
    from_url = settings("--loki-password-file", path, sink="loki=http://ann@l:3100")
    sink = LokiSink("http://ann@l:3100", sink_options(from_url, {}))
    assert request_headers(sink) == {"Authorization": basic("ann", "pw-1")}
    from_flag = settings("--loki-password-file", path, "--loki-username", "bob")
    sink = LokiSink("http://l:3100", sink_options(from_flag, {}))
    secrets.update({"password": "pw-2"})
    assert request_headers(sink) == {"Authorization": basic("bob", "pw-2")}


def test_env_forms(secrets: SecretVolume) -> None:
    s = settings(env={"LOG_SHIPPER_LOKI_BEARER_TOKEN_FILE": str(secrets.path("token"))})
    assert s.loki_bearer_token_file is not None and s.loki_bearer_token_file.get() == "tok-1"
    s = settings(
        env={"LOG_SHIPPER_HTTP_HEADER_FILE": f"{secrets.path('header')},{secrets.path('api-key')}"},
        sink="http=http://h/in",
    )
    assert [secret.get() for secret in s.http_header_file] == [
        ("Authorization", "Bearer hdr-1"),
        ("X-Api-Key", "key-1"),
    ]


def test_http_header_files_and_basic_auth(secrets: SecretVolume) -> None:
    s = settings(
        "--http-header-file", str(secrets.path("header")),
        "--http-header-file", str(secrets.path("api-key")),
        "--http-header", "X-Source: nginx",
        sink="http=http://h/in",
    )  # fmt: skip
    sink = HttpSink("http://h/in", sink_options(s, {}))
    assert request_headers(sink) == {"Authorization": "Bearer hdr-1", "X-Api-Key": "key-1"}
    assert sink._headers["X-Source"] == "nginx"
    secrets.update(
        {"header": "Authorization: Bearer hdr-2", "api-key": "X-Api-Key: key-2", "password": "pw-1"}
    )
    assert request_headers(sink) == {"Authorization": "Bearer hdr-2", "X-Api-Key": "key-2"}

    s = settings("--http-password-file", str(secrets.path("password")), sink="http=http://u@h/")
    sink = HttpSink("http://u@h/", sink_options(s, {}))
    assert request_headers(sink) == {"Authorization": basic("u", "pw-1")}


def test_a_header_file_may_not_rename_its_header(secrets: SecretVolume) -> None:
    s = settings("--http-header-file", str(secrets.path("api-key")), sink="http=http://h/")
    secrets.update({"api-key": "X-Other: key-2"})
    assert s.http_header_file[0].get() == ("X-Api-Key", "key-1")  # the last good value


def test_inline_forms_keep_working() -> None:
    s = settings("--loki-username", "u", "--loki-password", "p", sink="loki=http://l/")
    assert request_headers(LokiSink("http://l/", sink_options(s, {}))) == {
        "Authorization": basic("u", "p")
    }
    s = settings(sink="loki=http://u:p%40ss@l/")
    assert request_headers(LokiSink("http://u:p%40ss@l/", sink_options(s, {}))) == {
        "Authorization": basic("u", "p@ss")
    }


EXCLUSIVE = [
    (("--loki-password", "x", "--loki-password-file", "{password}", "--loki-username", "u"),
     "loki=http://l/", "--loki-password (LOG_SHIPPER_LOKI_PASSWORD) and --loki-password-file "
     "(LOG_SHIPPER_LOKI_PASSWORD_FILE) are exclusive"),
    (("--loki-bearer-token", "x", "--loki-bearer-token-file", "{token}"),
     "loki=http://l/", "--loki-bearer-token (LOG_SHIPPER_LOKI_BEARER_TOKEN) and "
     "--loki-bearer-token-file (LOG_SHIPPER_LOKI_BEARER_TOKEN_FILE) are exclusive"),
    (("--loki-bearer-token-file", "{token}", "--loki-username", "u"),
     "loki=http://l/", "--loki-bearer-token-file (LOG_SHIPPER_LOKI_BEARER_TOKEN_FILE) and "
     "--loki-username (LOG_SHIPPER_LOKI_USERNAME) are exclusive"),
    (("--loki-bearer-token-file", "{token}"),
     "loki=http://u@l/", "--loki-bearer-token-file (LOG_SHIPPER_LOKI_BEARER_TOKEN_FILE) and "
     "--sink (LOG_SHIPPER_SINK) loki=URL's user are exclusive"),
    (("--loki-password-file", "{password}"),
     "loki=http://u:inline@l/", "--loki-password-file (LOG_SHIPPER_LOKI_PASSWORD_FILE) and "
     "--sink (LOG_SHIPPER_SINK) loki=URL's password are exclusive"),
    (("--loki-username", "u"),
     "loki=http://v@l/", "--loki-username (LOG_SHIPPER_LOKI_USERNAME) and --sink "
     "(LOG_SHIPPER_SINK) loki=URL's user are exclusive"),
    (("--loki-password-file", "{password}"),
     "loki=http://l/", "--loki-password-file (LOG_SHIPPER_LOKI_PASSWORD_FILE) needs a user"),
    (("--http-password-file", "{password}"),
     "http=http://h/", "--http-password-file (LOG_SHIPPER_HTTP_PASSWORD_FILE) needs a user"),
    (("--http-password-file", "{password}"),
     "http=http://u:inline@h/", "--http-password-file (LOG_SHIPPER_HTTP_PASSWORD_FILE) and "
     "--sink (LOG_SHIPPER_SINK) http=URL's password are exclusive"),
    (("--http-header", "authorization: x", "--http-header-file", "{header}"),
     "http=http://h/", "--http-header (LOG_SHIPPER_HTTP_HEADER) and --http-header-file "
     "(LOG_SHIPPER_HTTP_HEADER_FILE) are exclusive: both set header authorization"),
    (("--http-header-file", "{header}", "--http-username", "u"),
     "http=http://h/", "--http-header-file (LOG_SHIPPER_HTTP_HEADER_FILE) and basic auth"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "sink", "message"), EXCLUSIVE)
def test_one_source_per_credential(secrets: SecretVolume, flags, sink: str, message: str):
    paths = {key: str(secrets.path(key)) for key in ("token", "password", "header")}
    with pytest.raises(SettingsError) as caught:
        settings(*(flag.format(**paths) for flag in flags), sink=sink)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    for secret in ("tok-1", "pw-1", "hdr-1", "inline"):
        assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "content", "why"),
    [
        ("--loki-bearer-token-file", None, "cannot read {path}: No such file or directory"),
        ("--loki-bearer-token-file", "", "{path} is empty"),
        ("--loki-password-file", "a\nb\n", "{path} holds a control character or a line break"),
        ("--http-header-file", "no colon s3cr3t", "{path}: expected 'Name: value'"),
        ("--http-header-file", "X-Key: v\r\nX-Injected: 1", "line break"),
        ("--http-password-file", "p\x00w", "control character"),
    ],
    ids=["missing", "empty", "two-lines", "not-a-header", "header-injection", "nul"],
)
def test_a_bad_file_is_a_settings_error_naming_setting_and_file(
    tmp_path: Path, flag: str, content: str | None, why: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content, newline="")
    sink = "http=http://u@h/" if flag.startswith("--http") else "loki=http://u@l/"
    if flag == "--loki-bearer-token-file":
        sink = "loki=http://l/"
    with pytest.raises(SettingsError) as caught:
        settings(flag, str(path), sink=sink)
    message = str(caught.value)
    env = "LOG_SHIPPER_" + flag[2:].upper().replace("-", "_")
    assert message.startswith(f"{flag} ({env}) from flag: invalid value '{path}': ")
    assert why.format(path=path) in message
    assert "s3cr3t" not in message and "\n" not in message


@pytest.mark.parametrize(
    "flags",
    [
        ("--http-header", "X-A: b\r\nX-Injected: 1"),
        ("--loki-tenant", "team\nX-Injected: 1"),
        ("--loki-bearer-token", "tok\r\nX: y"),
        ("--loki-username", "a:b"),
        ("--http-header", "X-A: \u20ac"),  # cannot be sent in a latin-1 header
    ],
    ids=["header", "tenant", "token", "user-with-colon", "beyond-latin1"],
)
def test_inline_values_that_would_break_the_request_are_refused(flags) -> None:
    with pytest.raises(SettingsError, match=flags[0]):
        settings(*flags)


def test_the_real_process_exits_2_with_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t")
    result = subprocess.run(
        [
            sys.executable, "-m", "sidecars", "log-shipper", "--listen", "off",
            "--state-file", str(tmp_path / "state.json"), "--sink", "loki=http://127.0.0.1:9/",
            "--loki-bearer-token-file", str(token),
        ],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "LOG_SHIPPER_LOKI_BEARER_TOKEN": "inline-s3cr3t"},
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "--loki-bearer-token (LOG_SHIPPER_LOKI_BEARER_TOKEN) and --loki-bearer-token-file" in (
        line
    )
    assert "s3cr3t" not in result.stderr + result.stdout
