"""Play the project's manifests on a hermetic podman: the podman variant of k8s/*.yaml (made by
k8s/variants.py, the one transform) with every containerPort given a free host port.

podman 4.3 publishes each containerPort on the host even without a hostPort, so leaving one
unmapped would bind a fixed host port (8080, 9101...) and clash with anything else there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from k8s import variants
from tests.e2e.engine import Podman
from tests.support.procs import free_port, http_get, wait_until

REPO = Path(__file__).resolve().parents[2]
APP_POD = REPO / "k8s" / "pod.yaml"
ORIGIN_POD = REPO / "k8s" / "demo" / "origin.yaml"


@dataclass
class PlayedPod:
    name: str
    ports: dict[int, int]  # containerPort -> hostPort
    play: subprocess.CompletedProcess[str]

    def url(self, container_port: int, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[container_port]}{path}"


def container_ports(docs: list[variants.Doc]) -> list[int]:
    return [
        port["containerPort"]
        for doc in docs
        if (spec := variants.pod_spec(doc)) is not None
        for container in variants.all_containers(spec)
        for port in container.get("ports", [])
    ]


def pod_name(docs: list[variants.Doc]) -> str:
    (name,) = [doc["metadata"]["name"] for doc in docs if doc.get("kind") == "Pod"]
    return name


def play(
    engine: Podman,
    manifest: Path,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    ports: Mapping[int, int] | None = None,
    edit: Callable[[list[variants.Doc]], None] | None = None,
) -> PlayedPod:
    """kube play the podman variant of ``manifest``; ``ports`` pins host ports (else free ones).

    ``edit`` may change the podman variant before it is played (a test's own tweak)."""
    docs = variants.load(manifest)
    host_ports = {port: (ports or {}).get(port) or free_port() for port in container_ports(docs)}
    out = variants.podman_all(docs, name=name, host_ports=host_ports, env=env)
    if edit is not None:
        edit(out)
    name = pod_name(out)
    result = engine.play(variants.dump(out), name)
    return PlayedPod(name=name, ports=host_ports, play=result)


def wait_http_ok(url: str, timeout: float = 60, what: str = "") -> bytes:
    def ok() -> bytes | None:
        status, body, _ = http_get(url, timeout=2)
        return body if status == 200 else None

    return wait_until(ok, timeout=timeout, interval=0.2, what=what or f"200 from {url}")
