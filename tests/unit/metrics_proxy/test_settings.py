"""The metrics-proxy's settings: every bad value fails at start with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecars.metrics_proxy.settings import (
    DEFAULT_BUCKETS,
    PART,
    MetricsProxySettings,
    expanded_const_labels,
    parse_buckets,
    parse_merge_target,
)
from sidecars.runtime.envexpand import expand as expand_env
from sidecars.runtime.settings import SettingsError, load

URL = ["--stub-status-url", "http://127.0.0.1:8081/stub_status"]


def settings(*argv: str, **env: str) -> MetricsProxySettings:
    return load(MetricsProxySettings, PART, [*URL, *argv], env)


def test_defaults() -> None:
    s = settings()
    assert str(s.listen) == "0.0.0.0:9113"  # the exporter's port
    assert s.stub_status_url.url == "http://127.0.0.1:8081/stub_status"
    assert s.duration_buckets == DEFAULT_BUCKETS
    assert s.status_label == "code"
    assert s.merge_url == ()


def test_env_vars() -> None:
    s = load(
        MetricsProxySettings,
        PART,
        [],
        {
            "METRICS_PROXY_STUB_STATUS_URL": "unix:/run/nginx/status.sock:/stub_status",
            "METRICS_PROXY_MERGE_URL": "app=http://127.0.0.1:8080/metrics,http://[::1]:9000/m",
            "METRICS_PROXY_CONST_LABELS": "pod=${POD_NAME},team=web",
            "METRICS_PROXY_DURATION_BUCKETS": "0.1,1,10",
        },
    )
    assert s.stub_status_url.socket == "/run/nginx/status.sock"
    assert s.stub_status_url.url == "http://localhost/stub_status"
    assert [m.name for m in s.merge_url] == ["app", "::1:9000"]
    assert s.const_labels == (("pod", "${POD_NAME}"), ("team", "web"))
    assert s.duration_buckets == (0.1, 1.0, 10.0)


def test_unix_socket_without_path_requests_root_like_the_exporter() -> None:
    s = settings("--stub-status-url", "unix:/run/nginx.sock")
    assert s.stub_status_url.url == "http://localhost/"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--stub-status-url", "ftp://x/"], {}, "--stub-status-url"),
        (["--stub-status-url", "unix:relative.sock"], {}, "unix:/absolute"),
        (["--stub-status-url", "http://127.0.0.1:99999/"], {}, "--stub-status-url"),
        (["--stub-status-timeout", "0"], {}, "--stub-status-timeout"),
        (["--duration-buckets", "0.1,0.05"], {}, "strictly increasing"),
        (["--duration-buckets", "a,b"], {}, "--duration-buckets"),
        (["--upstream-buckets=-1,2"], {}, "greater than 0"),
        (["--status-label", "family"], {}, "--status-label"),
        (["--access-log-start", "middle"], {}, "--access-log-start"),
        (["--merge-url", "bad name=http://x/"], {}, "--merge-url"),
        (["--merge-prefix", "9lives_"], {}, "--merge-prefix"),
        (["--merge-label", "__up"], {}, "--merge-label"),
        (["--merge-max-bytes", "0"], {}, "--merge-max-bytes"),
        (["--const-labels", "novalue"], {}, "expected name=value"),
        (["--const-labels", "bad-name=x"], {}, "not a valid label name"),
        (["--const-labels", "pod=${1X}"], {}, "not a valid variable reference"),
        (["--const-labels", "a=1", "--const-labels", "a=2"], {}, "label 'a' given twice"),
        (["--merge-label", "pod", "--const-labels", "pod=x"], {}, "given twice"),
        (["--log-format", "nonsense"], {}, "--log-format"),
        (["--log-format", "$remote_addr ${oops"], {}, "missing '}'"),
        (["--bearer-token-file", "/nonexistent/token"], {}, "--bearer-token-file"),
        (["--basic-auth-user", "prom"], {}, "must be given together"),
        (["--tls-cert-file", "/etc/hostname"], {}, "must be given together"),
        (["--tls-key-file", "/nonexistent.key"], {}, "--tls-key-file"),
        (
            ["--merge-url", "a=http://x/", "--merge-url", "a=http://y/"],
            {},
            "name 'a' used twice",
        ),
        ([], {"METRICS_PROXY_STUB_STATUS_UR": "x"}, "did you mean METRICS_PROXY_STUB_STATUS_URL"),
        (["--no-such-flag"], {}, "unrecognized arguments"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_them(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(MetricsProxySettings, PART, [*URL, *argv], env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_env_value_names_the_env_var() -> None:
    with pytest.raises(SettingsError, match=r"METRICS_PROXY_STUB_STATUS_URL.*from env"):
        load(MetricsProxySettings, PART, [], {"METRICS_PROXY_STUB_STATUS_URL": "ftp://x/"})


def test_missing_stub_status_url() -> None:
    with pytest.raises(SettingsError, match=r"--stub-status-url .* is required"):
        load(MetricsProxySettings, PART, [], {})


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        settings("--bearer-token-file", str(tmp_path / "token"))


def test_const_label_expansion() -> None:
    s = settings("--const-labels", "pod=${POD}", "--const-labels", "where=${NS}/$x")
    assert expanded_const_labels(s, {"POD": "web-0", "NS": "shop"}) == (
        ("pod", "web-0"),
        ("where", "shop/$x"),
    )
    with pytest.raises(SettingsError, match=r"--const-labels .*\$\{NS\} is not set"):
        expanded_const_labels(s, {"POD": "web-0"})


def test_expand_env_leaves_other_dollars() -> None:
    assert expand_env("$a ${B} $", {"B": "b"}) == "$a b $"


def test_merge_target_names() -> None:
    assert parse_merge_target("http://127.0.0.1:8080/metrics").name == "127.0.0.1:8080"
    assert parse_merge_target("http://app/metrics").name == "app:80"
    assert parse_merge_target("unix:/run/app.sock:/metrics").name == "app.sock"
    named = parse_merge_target("shop=https://127.0.0.1:8443/metrics?x=1")
    assert (named.name, named.target.url) == ("shop", "https://127.0.0.1:8443/metrics?x=1")


def test_a_password_in_a_url_is_never_shown() -> None:
    target = parse_merge_target("app=http://prom:s3cret@127.0.0.1:8080/metrics").target
    assert target.url == "http://prom:s3cret@127.0.0.1:8080/metrics"  # what is requested
    assert str(target) == "http://prom:***@127.0.0.1:8080/metrics"  # what logs and errors show


def test_buckets() -> None:
    assert parse_buckets(" 0.5, 1 ,2.5") == (0.5, 1.0, 2.5)
    for bad in ("", "inf", "nan", "1,1"):
        with pytest.raises(ValueError):
            parse_buckets(bad)
