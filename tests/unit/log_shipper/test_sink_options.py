"""What the sinks receive from the settings: the syslog HOSTNAME, taken from the Pod's name."""

from __future__ import annotations

from sidecars.log_shipper.main import sink_options
from sidecars.log_shipper.settings import PART, Settings
from sidecars.runtime.settings import load


def settings(*flags: str) -> Settings:
    return load(Settings, PART, ["--state-file", "/s", "--sink", "relp=h:1", *flags], {})


def test_hostname_from_the_environment_is_made_valid_quietly() -> None:
    assert sink_options(settings(), {"HOSTNAME": "web-0"}).hostname == "web-0"
    assert sink_options(settings(), {"HOSTNAME": "web 0/ü"}).hostname == "web_0/_"
    assert sink_options(settings(), {"HOSTNAME": ""}).hostname == "-"
    assert sink_options(settings(), {}).hostname == "-"


def test_the_hostname_setting_wins() -> None:
    assert sink_options(settings("--hostname", "edge-1"), {"HOSTNAME": "x"}).hostname == "edge-1"
