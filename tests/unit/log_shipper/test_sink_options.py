"""What the sinks receive from the settings: the syslog HOSTNAME and the Pod's identity."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sidecars.log_shipper.main import sink_options
from sidecars.log_shipper.settings import PART, Settings, parse_pod_identity
from sidecars.log_shipper.sinks.base import Batch
from sidecars.log_shipper.sinks.http import HttpSink
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.runtime.settings import SettingsError, load


def settings(*flags: str) -> Settings:
    return load(Settings, PART, ["--state-file", "/s", "--sink", "relp=h:1", *flags], {})


def test_hostname_from_the_environment_is_made_valid_quietly() -> None:
    assert sink_options(settings(), {"HOSTNAME": "web-0"}).hostname == "web-0"
    assert sink_options(settings(), {"HOSTNAME": "web 0/ü"}).hostname == "web_0/_"
    assert sink_options(settings(), {"HOSTNAME": ""}).hostname == "-"
    assert sink_options(settings(), {}).hostname == "-"


def test_the_hostname_setting_wins() -> None:
    assert sink_options(settings("--hostname", "edge-1"), {"HOSTNAME": "x"}).hostname == "edge-1"


def test_pod_identity_defaults_to_the_downward_api_then_hostname() -> None:
    env = {"POD_NAME": "web-7f9c-abcde", "POD_NAMESPACE": "shop", "HOSTNAME": "other"}
    options = sink_options(settings(), env)
    assert options.pod_identity == "shop/web-7f9c-abcde"
    assert options.loki_labels == {"job": "nginx", "pod": "web-7f9c-abcde", "namespace": "shop"}
    options = sink_options(settings(), {"HOSTNAME": "web-0"})
    assert options.pod_identity == "web-0"
    assert options.loki_labels == {"job": "nginx", "pod": "web-0"}
    options = sink_options(settings(), {})
    assert options.pod_identity is None and options.loki_labels == {"job": "nginx"}


def test_pod_identity_setting_and_explicit_labels_win() -> None:
    env = {"POD_NAME": "web-1", "POD_NAMESPACE": "shop"}
    options = sink_options(settings("--pod-identity", "edge/gw-2"), env)
    assert options.pod_identity == "edge/gw-2"
    assert options.loki_labels == {"job": "nginx", "pod": "gw-2", "namespace": "edge"}
    options = sink_options(settings("--pod-identity", "off"), env)
    assert options.pod_identity is None and options.loki_labels == {"job": "nginx"}
    labelled = settings("--loki-label", "job=x", "--loki-label", "pod=${POD_NAME}-a")
    labels = sink_options(labelled, env).loki_labels
    assert labels == {"job": "x", "pod": "web-1-a", "namespace": "shop"}


def test_pod_identity_is_validated() -> None:
    for bad in ("a/b/c", "a b", "/x", "x/"):
        with pytest.raises(SettingsError, match="pod-identity"):
            settings("--pod-identity", bad)


async def test_idempotency_key_carries_the_pod_identity() -> None:
    batch = Batch("/log", "fp", ["a"], [0, 2], [1])
    _, headers = await HttpSink("http://h/i", SinkOptions(pod_identity="shop/web-1")).prepare(batch)
    assert headers["Idempotency-Key"] == "shop/web-1/fp:0-2"
    _, headers = await HttpSink("http://h/i", SinkOptions()).prepare(batch)
    assert headers["Idempotency-Key"] == "fp:0-2"


@given(st.dictionaries(st.sampled_from(["POD_NAME", "POD_NAMESPACE", "HOSTNAME"]), st.text()))
@hypothesis_settings(max_examples=200, deadline=None)
def test_pod_identity_from_any_environment_is_a_safe_header_value(env: dict[str, str]) -> None:
    options = sink_options(settings(), env)
    identity = options.pod_identity
    if identity is None:
        assert "pod" not in options.loki_labels
        return
    assert re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?", identity), identity
    assert identity.split("/")[-1] == options.loki_labels["pod"]


@given(st.text(max_size=80))
@hypothesis_settings(max_examples=300, deadline=None)
def test_pod_identity_setting_accepts_only_names(raw: str) -> None:
    try:
        value = parse_pod_identity(raw)
    except ValueError:
        return
    assert value in ("auto", "off") or re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", value
    ), value


def test_stale_after_must_outlast_a_retried_send() -> None:
    # A sender retrying a sink that is down turns once per attempt and per pause: liveness
    # would fail for a mere outage if --stale-after were shorter.
    with pytest.raises(SettingsError, match=re.escape("--stale-after (30s) must be longer")):
        settings("--stale-after", "30s")
    with pytest.raises(SettingsError, match="--stale-after"):
        settings("--send-timeout", "90s")
    assert settings("--stale-after", "31s").stale_after == 31.0
