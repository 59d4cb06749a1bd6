"""Property tests of the settings parsers: any text either parses into a sane value or raises
the settings error (ValueError from a parser, SettingsError naming the setting from the loader),
never another exception. Bounded: a few seconds in all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecars.config_fetcher.settings import Settings as FetcherSettings
from sidecars.log_shipper.settings import Settings as ShipperSettings
from sidecars.log_shipper.settings import parse_header
from sidecars.metrics_proxy.settings import MetricsProxySettings as ProxySettings
from sidecars.runtime import parsers
from sidecars.runtime.settings import Option, SettingsError, load, options

# Near-valid shapes find more edges than uniform text: digits with units, ports, headers, URLs.
NEAR_VALID = [
    r"\s?-?[0-9\u0660-\u0669]{0,25}(\.[0-9]{0,5})?\s?(ms|s|m|h|d|)\s?",
    r"[0-9]{0,30}\s?([KMGTkmgtP]i?[Bb]?|B|)",
    r"(\[[0-9a-fA-F:.]{0,12}\]|[a-z0-9.\- \n]{0,12})?:[0-9]{0,7}\n?",
    r"(https?|ftp|HTTP)://([a-z]{0,5}(:[a-z]{0,5})?@)?[a-z0-9.\[\]:%]{0,15}(/[ -~]{0,10})?",
    r"[A-Za-z\-]{0,10}\s?:[ -~\t\r\n\x00\x7f\u00e9\u20ac]{0,20}",
    r"[a-z_]{0,8}=[ -~]{0,12}(,[a-z_]{0,8}=[ -~]{0,12}){0,3}",
    r"(true|false|yes|no|on|off|1|0|TRUE| On |)",
    r"[\[\]\(\)\*\+\?\\|{}^$.a-z]{0,20}",
]
VALUES = st.one_of(
    st.text(max_size=40),
    *(st.from_regex(pattern, fullmatch=True) for pattern in NEAR_VALID),
    st.sampled_from(["9" * 5000, "(" * 2000, "1" + "0" * 400, "nan", "inf", "1e9", "-0"]),
)

PARSERS = {
    "bool": parsers.parse_bool,
    "duration": parsers.parse_duration,
    "positive_duration": parsers.parse_positive_duration,
    "size": parsers.parse_size,
    "positive_size": parsers.parse_positive_size,
    "hostport": parsers.parse_hostport,
    "http_url": parsers.parse_http_url,
    "sha256": parsers.parse_hex_sha256,
    "log_level": parsers.parse_log_level,
    "regex": parsers.parse_regex,
    "nonnegative_int": parsers.parse_nonnegative_int,
    "choice": parsers.choice("a", "b"),
    "header": parse_header,
}

# A valid base per part: one option at a time is then given an arbitrary value.
PARTS = {
    "log-shipper": (ShipperSettings, ["--state-file=/s", "--sink=stdout"]),
    "config-fetcher": (FetcherSettings, ["--source=/src", "--dest=/dst", "--once"]),
    "metrics-proxy": (ProxySettings, ["--stub-status-url=http://127.0.0.1:8081/stub_status"]),
}
OPTIONS = [(part, opt) for part, (cls, _) in PARTS.items() for opt in options(cls, part)]


def check_value(kind: str, value: object) -> None:
    """What a successful parse must give: no infinite, negative or out-of-range values."""
    if kind.endswith("duration"):
        assert isinstance(value, float) and math.isfinite(value) and value >= 0
    elif kind.endswith("size") or kind == "nonnegative_int":
        assert isinstance(value, int) and value >= 0
    elif kind == "hostport":
        assert isinstance(value, parsers.HostPort) and 0 <= value.port <= 65535
        assert value.host and value.host == value.host.strip() and "\n" not in value.host
    elif kind == "header":
        name, text = value  # type: ignore[misc]
        (name + ": " + text).encode("latin-1")  # sendable as an HTTP/1.1 header line
        assert "\r" not in text and "\n" not in text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(PARSERS)), raw=VALUES)
@example(kind="duration", raw="9" * 400)
@example(kind="hostport", raw="a b:80")
@example(kind="hostport", raw=":80\n")
@example(kind="regex", raw="(" * 2000)
def test_value_parsers_return_a_sane_value_or_raise_value_error(kind: str, raw: str) -> None:
    try:
        value = PARSERS[kind](raw)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    check_value(kind, value)


def _load(part: str, opt: Option, raw: str, as_env: bool) -> None:
    cls, base = PARTS[part]
    argv = [a for a in base if not a.startswith(opt.flag + "=") and a != opt.flag]
    if opt.is_switch:
        argv = [a for a in argv if a != opt.flag]
        as_env = True  # a switch takes no value on the command line
    env = {opt.env: raw} if as_env else {}
    if not as_env:
        argv.append(f"{opt.flag}={raw}")
    load(cls, part, argv, env)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    choice=st.sampled_from(OPTIONS),
    raw=VALUES,
    as_env=st.booleans(),
)
def test_every_setting_loads_or_raises_a_settings_error_naming_it(
    choice: tuple[str, Option], raw: str, as_env: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    part, opt = choice
    try:
        _load(part, opt, raw, as_env)
    except SettingsError as exc:
        message = str(exc)
        assert "\n" not in message
        # A bad value names its setting; a cross-setting check names the settings it compares.
        assert opt.flag in message or opt.env in message or "--" in message, message
        if opt.spec.secret:
            assert raw not in message or len(raw) < 4 or raw in opt.flag


# What the properties found, kept as regressions.


@pytest.mark.parametrize("raw", ["1" + "0" * 400, "9" * 400 + "ms", "400000000"])
def test_regression_huge_durations_are_refused(raw: str) -> None:
    # float() of hundreds of digits is inf; a year-long timeout overflows C-level waits.
    with pytest.raises(ValueError, match="too large"):
        parsers.parse_duration(raw)


@pytest.mark.parametrize("raw", ["9" * 30, "2000000TiB", "1" + "0" * 5000])
def test_regression_huge_sizes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parsers.parse_size(raw)


@pytest.mark.parametrize("raw", ["\u0663s", "1_000", "+3", "\u0663"])
def test_regression_only_ascii_digits(raw: str) -> None:
    # int() and float() take other scripts' digits, underscores and a plus sign.
    for parse in (parsers.parse_duration, parsers.parse_size, parsers.parse_nonnegative_int):
        with pytest.raises(ValueError):
            parse(raw)


def test_regression_listen_host_with_blanks_is_refused() -> None:
    for raw in ("a b:80", "host\n:80", "h\x00:80", ":80\n:81"):
        with pytest.raises(ValueError):
            parsers.parse_hostport(raw)
    assert parsers.parse_hostport(" :80 ") == parsers.HostPort("0.0.0.0", 80)


def test_regression_deeply_nested_regex_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        parsers.parse_regex("(" * 2000)


def test_regression_a_line_break_in_a_value_keeps_the_error_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load(ShipperSettings, "log-shipper", ["--state-file=/s", "--sink=stdout"],
             {"LOG_SHIPPER_LOKI_PASSWORD_FILE": "/no\nsuch"})  # fmt: skip
    assert "\n" not in str(caught.value) and "/no\\nsuch" in str(caught.value)


def test_regression_a_bad_source_url_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="--source"):
        load(FetcherSettings, "config-fetcher", ["--source=http://", "--dest=/d", "--once"], {})


def test_paths_in_the_loader_do_not_leak(tmp_path: Path) -> None:
    # The property above reads no file it was not pointed at; this one makes sure a secret file
    # setting pointed at a directory or a NUL byte is the same one-line settings error.
    for raw in (str(tmp_path), "a\x00b"):
        with pytest.raises(SettingsError, match="--loki-bearer-token-file"):
            load(
                ShipperSettings,
                "log-shipper",
                ["--state-file=/s", "--sink=stdout", f"--loki-bearer-token-file={raw}"],
                {},
            )
