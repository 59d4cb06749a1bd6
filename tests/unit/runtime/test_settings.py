"""The settings contract shared by every part."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from sidecars.runtime.lifecycle import CommonSettings
from sidecars.runtime.parsers import parse_bool, parse_positive_duration, parse_size
from sidecars.runtime.settings import SettingsError, load, markdown_table, options, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class Demo(CommonSettings):
    """A demo part."""

    source: str = setting(help="where from")
    interval: float = setting(30.0, help="how often", parse=parse_positive_duration)
    limit: int = setting(1024, help="how big", parse=parse_size)
    paths: tuple[str, ...] = setting(("a.log",), help="globs", repeatable=True)
    verbose: bool = setting(False, help="talk more", parse=parse_bool)

    def check(self) -> None:
        if self.source == "bad":
            raise ValueError("--source must not be 'bad'")


def test_env_and_flag_names() -> None:
    names = {o.name: (o.flag, o.env) for o in options(Demo, "demo-part")}
    assert names["interval"] == ("--interval", "DEMO_PART_INTERVAL")
    assert names["drain_timeout"] == ("--drain-timeout", "DEMO_PART_DRAIN_TIMEOUT")


def test_defaults_env_then_flag_wins() -> None:
    s = load(Demo, "demo", ["--source", "x"], {})
    assert (s.interval, s.limit, s.paths, s.verbose) == (30.0, 1024, ("a.log",), False)
    env = {"DEMO_INTERVAL": "2m", "DEMO_SOURCE": "env", "DEMO_VERBOSE": "yes"}
    s = load(Demo, "demo", [], env)
    assert (s.source, s.interval, s.verbose) == ("env", 120.0, True)
    s = load(Demo, "demo", ["--source", "flag", "--interval", "5", "--no-verbose"], env)
    assert (s.source, s.interval, s.verbose) == ("flag", 5.0, False)


def test_repeatable_env_is_comma_separated_and_flag_repeats() -> None:
    s = load(Demo, "demo", ["--source", "x"], {"DEMO_PATHS": "a.log, b.log,,c.log"})
    assert s.paths == ("a.log", "b.log", "c.log")
    s = load(Demo, "demo", ["--source", "x", "--paths", "1", "--paths", "2"], {"DEMO_PATHS": "z"})
    assert s.paths == ("1", "2")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--source (DEMO_SOURCE) is required"),
        (
            ["--source", "x", "--interval", "soon"],
            {},
            "--interval (DEMO_INTERVAL) from flag: invalid value 'soon'",
        ),
        (["--source", "x"], {"DEMO_INTERVAL": "-3"}, "--interval (DEMO_INTERVAL) from env"),
        (
            ["--source", "x"],
            {"DEMO_LIMIT": "12 parsecs"},
            "--limit (DEMO_LIMIT) from env: invalid value",
        ),
        (["--source", "x"], {"DEMO_VERBOSE": "maybe"}, "--verbose (DEMO_VERBOSE) from env"),
        (
            ["--source", "x"],
            {"DEMO_INTERVALL": "3"},
            "DEMO_INTERVALL: unknown setting (did you mean DEMO_INTERVAL?)",
        ),
        (["--source", "x", "--intervall", "3"], {}, "unrecognized arguments: --intervall 3"),
        (["--source", "bad"], {}, "--source must not be 'bad'"),
        (["--source", "x", "--listen", "nowhere"], {}, "--listen (DEMO_LISTEN) from flag"),
    ],
)
def test_invalid_settings_name_the_setting(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(Demo, "demo", argv, env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_kubernetes_service_links_are_not_unknown_settings() -> None:
    env = {
        "DEMO_SERVICE_HOST": "10.0.0.1",
        "DEMO_SERVICE_PORT": "80",
        "DEMO_SERVICE_PORT_HTTP": "80",
        "DEMO_PORT": "tcp://10.0.0.1:80",
        "DEMO_PORT_80_TCP_ADDR": "10.0.0.1",
    }
    assert load(Demo, "demo", ["--source", "x"], env).source == "x"


def test_listen_off_disables_the_server() -> None:
    assert load(Demo, "demo", ["--source", "x", "--listen", "off"], {}).listen is None


def test_markdown_table_lists_every_setting() -> None:
    table = markdown_table(Demo, "demo")
    for opt in options(Demo, "demo"):
        assert f"`{opt.env}`" in table
    assert "`(required)`" in table


def test_cli_exit_code_2_and_one_line_on_stderr() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecars",
            "config-fetcher",
            "--dest",
            "/tmp/x",
            "--once",
            "--source",
            "http://example.invalid/a.conf",
            "--deadline",
            "never",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--deadline (CONFIG_FETCHER_DEADLINE) from flag: invalid value 'never'" in lines[0]


def test_cli_help_lists_env_names_and_defaults() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecars", "config-fetcher", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert "CONFIG_FETCHER_SOURCE" in proc.stdout
    assert "CONFIG_FETCHER_INTERVAL] (default: 30.0)" in proc.stdout


def test_cli_unknown_part() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecars", "config-fetchr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unknown part 'config-fetchr'" in proc.stderr
