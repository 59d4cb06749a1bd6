"""The config-fetcher containers' probes in every shipped Pod variant follow one rule: startup =
started (a verified version on the volume), liveness = the fetcher's own progress, readiness
never tied to a remote system; and the sidecar can read nginx's error log to verify reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8s import variants
from sidecars.config_fetcher.settings import PART, Settings
from sidecars.runtime.settings import load

K8S = Path(__file__).resolve().parents[3] / "k8s"


def fetchers(path: Path) -> list[dict]:
    out = []
    for doc in variants.load(path):
        spec = variants.pod_spec(doc)
        if spec is not None:
            out += [c for c in variants.all_containers(spec) if "config-fetcher" in c["image"]]
    return out


@pytest.mark.parametrize("manifest", ["pod.yaml", "classic/pod.yaml"])
def test_fetcher_probes_and_mounts(manifest: str) -> None:
    (init, sidecar) = fetchers(K8S / manifest)
    assert "--once" in init["args"]
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(init)
    # /readyz = a verified version is published (no remote check in it: see the integration
    # test of a restart during an origin outage); /healthz = the loop's own progress.
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    args = [a for a in sidecar["args"] if a.startswith("--")]
    env = {e["name"]: e.get("value", "") for e in sidecar["env"]}
    settings = load(Settings, PART, args, env)
    assert settings.nginx_error_log is not None
    log_dir = str(settings.nginx_error_log.parent)
    assert mounts[log_dir]["readOnly"] is True, "reads nginx's error log, never writes it"
    assert settings.reload_pidfile is not None
    assert str(settings.reload_pidfile.parent) in mounts
