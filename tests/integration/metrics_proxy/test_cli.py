"""The real command line: bad settings end the process at start with exit 2 and one line
naming the setting (and a JSON line for log collectors); nothing half-started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import sidecars_cmd

pytestmark = pytest.mark.integration

URL = ("--stub-status-url", "http://127.0.0.1:9/stub_status")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_PROXY_")}
    return subprocess.run(
        sidecars_cmd("metrics-proxy", *args),
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "--stub-status-url (METRICS_PROXY_STUB_STATUS_URL) is required"),
        (
            (*URL, "--const-labels", "pod=${POD_NAME}"),
            {},
            "--const-labels (METRICS_PROXY_CONST_LABELS): ${POD_NAME} is not set",
        ),
        ((*URL, "--bearer-token-file", "/nonexistent/token"), {}, "cannot read /nonexistent/token"),
        ((), {"METRICS_PROXY_STUB_STATUS_URL": "nginx:8081"}, "METRICS_PROXY_STUB_STATUS_URL"),
        (URL, {"METRICS_PROXY_LISTN": ":9113"}, "did you mean METRICS_PROXY_LISTEN"),
    ],
    ids=["missing-url", "unset-env-var", "token-file", "bad-url-env", "misspelled-env"],
)
def test_bad_settings(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert message in line
    fatal = json.loads(result.stdout.splitlines()[-1])
    assert fatal["level"] == "error" and message in fatal["msg"]


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(*URL, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert '"msg": "cannot listen"' in result.stdout


def test_help_lists_every_setting_with_its_env_var() -> None:
    result = run("--help")
    assert result.returncode == 0
    for env in ("METRICS_PROXY_STUB_STATUS_URL", "METRICS_PROXY_MERGE_URL", "METRICS_PROXY_LISTEN"):
        assert env in result.stdout
    assert "0.0.0.0:9113" in result.stdout
