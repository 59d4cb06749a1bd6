"""e2e-kind: the same manifests on a real Kubernetes (kind), wherever kind, kubectl and an engine
exist. It skips here with the reason printed: these machines have no kind and cannot pull a
kindest/node image.

  KIND_NODE_IMAGE=kindest/node:v1.30.x   node image (Kubernetes version) to test against
  SIDECARS_BASE_IMAGE / SIDECARS_NGINX_IMAGE   Dockerfile BASE_IMAGE / NGINX_IMAGE overrides

Images are built from the Dockerfile with the engine kind runs on (docker, or podman through
KIND_EXPERIMENTAL_PROVIDER=podman), saved and loaded into the cluster with `kind load`.
Native sidecars (k8s/pod.yaml) need Kubernetes 1.29+; older clusters get k8s/classic/pod.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from k8s import variants
from tests.e2e import images as build
from tests.support.procs import wait_until

pytestmark = pytest.mark.e2e_kind

K8S = build.REPO / "k8s"


def engine_for_kind() -> tuple[str | None, str]:
    """(engine, why-not): the container engine kind can use here, or the reason there is none."""
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return None, f"{tool} is not installed"
    provider = os.environ.get("KIND_EXPERIMENTAL_PROVIDER", "docker")
    if shutil.which(provider) is None:
        return None, f"kind's engine {provider} is not installed"
    info = subprocess.run([provider, "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return None, f"{provider} info failed: {info.stderr.strip()[:200]}"
    return provider, ""


@dataclass
class Cluster:
    name: str
    engine: str
    workdir: Path

    def run(self, *args: str, timeout: float = 600, input: str | None = None) -> str:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
            )
        return proc.stdout

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        return self.run(
            "kubectl", "--context", f"kind-{self.name}", *args, input=input, timeout=timeout
        )

    def server_minor(self) -> int:
        version = json.loads(self.kubectl("version", "--output=json"))["serverVersion"]
        return int("".join(ch for ch in version["minor"] if ch.isdigit()))

    def load(self, image: str) -> None:
        archive = self.workdir / (image.replace("/", "_").replace(":", "_") + ".tar")
        self.run(self.engine, "save", "--output", str(archive), image)
        self.run("kind", "load", "image-archive", str(archive), "--name", self.name)
        archive.unlink()

    def pod(self, name: str) -> dict:
        return json.loads(self.kubectl("get", "pod", name, "--output=json"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    engine, why = engine_for_kind()
    if engine is None:
        pytest.skip(f"e2e-kind: {why}")
    name = f"sidecars-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="sidecars-kind-"))
    cluster = Cluster(name=name, engine=engine, workdir=workdir)
    create = ["kind", "create", "cluster", "--name", name, "--wait", "180s"]
    if os.environ.get("KIND_NODE_IMAGE"):
        create += ["--image", os.environ["KIND_NODE_IMAGE"]]
    try:
        cluster.run(*create, timeout=900)
        wanted = build.manifest_images(
            doc for manifest in build.MANIFESTS for doc in variants.load(manifest)
        )
        args = []
        for arg, env in (
            ("BASE_IMAGE", "SIDECARS_BASE_IMAGE"),
            ("NGINX_IMAGE", "SIDECARS_NGINX_IMAGE"),
        ):
            if os.environ.get(env):
                args += ["--build-arg", f"{arg}={os.environ[env]}"]
        for target, image in build.targets_of(wanted).items():
            cluster.run(
                engine,
                "build",
                *args,
                "--target",
                target,
                "--tag",
                image,
                str(build.REPO),
                timeout=1200,
            )
            cluster.load(image)
        yield cluster
    finally:
        subprocess.run(
            ["kind", "delete", "cluster", "--name", name], capture_output=True, check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)


def _time(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def app(cluster: Cluster) -> str:
    cluster.kubectl("apply", "--filename", str(K8S / "demo" / "origin.yaml"))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sidecars-origin", "--timeout=180s")
    manifest = K8S / "pod.yaml" if cluster.server_minor() >= 29 else K8S / "classic" / "pod.yaml"
    cluster.kubectl("apply", "--filename", str(manifest))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/sidecars-demo", "--timeout=300s")
    return "sidecars-demo"


def test_init_finished_before_nginx_started_and_page_served(cluster: Cluster, app: str):
    status = cluster.pod(app)["status"]
    init = next(s for s in status["initContainerStatuses"] if s["name"] == "config-fetcher-init")
    nginx = next(s for s in status["containerStatuses"] if s["name"] == "nginx")
    assert init["state"]["terminated"]["exitCode"] == 0
    assert _time(init["state"]["terminated"]["finishedAt"]) <= _time(
        nginx["state"]["running"]["startedAt"]
    )
    page = cluster.kubectl(
        "exec",
        app,
        "--container",
        "config-fetcher",
        "--",
        "python3",
        "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').read().decode())",
    )
    assert "Hello from the sidecars demo" in page and f"<code>{app}</code>" in page


def test_broken_source_fails_in_init_container(cluster: Cluster, app: str):
    missing = "http://sidecars-origin:8090/missing.tar.gz"
    manifest = K8S / "pod.yaml" if cluster.server_minor() >= 29 else K8S / "classic" / "pod.yaml"
    docs = [
        variants.override(doc, name="sidecars-broken", env={"CONFIG_FETCHER_SOURCE": missing})
        for doc in variants.load(manifest)
    ]
    cluster.kubectl("apply", "--filename", "-", input=variants.dump(docs))
    try:

        def init_failed() -> dict | None:
            status = cluster.pod("sidecars-broken")["status"]
            for s in status.get("initContainerStatuses", []):
                if s["name"] == "config-fetcher-init":
                    done = s["state"].get("terminated") or s.get("lastState", {}).get("terminated")
                    return done if done and done["exitCode"] != 0 else None
            return None

        assert (
            wait_until(init_failed, timeout=180, interval=2, what="the init container failing")[
                "exitCode"
            ]
            == 1
        )
        logs = [
            subprocess.run(
                [
                    "kubectl",
                    "--context",
                    f"kind-{cluster.name}",
                    "logs",
                    "sidecars-broken",
                    "--container",
                    "config-fetcher-init",
                    *previous,
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for previous in ([], ["--previous"])  # the kubelet may have restarted it already
        ]
        assert any(missing in log and "404" in log for log in logs), logs
        statuses = cluster.pod("sidecars-broken")["status"]["containerStatuses"]
        nginx = next(s for s in statuses if s["name"] == "nginx")
        assert "running" not in nginx["state"]
    finally:
        cluster.kubectl("delete", "pod", "sidecars-broken", "--wait=false")


# The injected Deployment (k8s/deployment.yaml, `sidecars inject` of k8s/workloads/): its
# namespace `web` reaches the demo origin in `default` by its full Service name. PodMonitor needs
# prometheus-operator's CRD, which a bare kind cluster lacks; the NetworkPolicy would only be
# enforced by a CNI that does, and it names the origin's namespace, so both stay out here.
ORIGIN_FQDN = "http://sidecars-origin.default.svc.cluster.local:8090/site.tar.gz"


def injected_deployment(minor: int) -> list[dict]:
    manifest = K8S / "deployment.yaml" if minor >= 29 else K8S / "classic" / "deployment.yaml"
    docs = []
    for doc in variants.load(manifest):
        if doc["kind"] in ("PodMonitor", "NetworkPolicy"):
            continue
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            for container in variants.all_containers(spec):
                for item in container.get("env", []):
                    if item["name"] == "CONFIG_FETCHER_SOURCE":
                        item["value"] = ORIGIN_FQDN
        docs.append(doc)
    return docs


def test_injected_deployment_rolls_out_and_serves(cluster: Cluster, app: str):
    namespaces = cluster.kubectl("get", "namespace", "--output=name")
    if "namespace/web" not in namespaces.split():
        cluster.kubectl("create", "namespace", "web")
    docs = injected_deployment(cluster.server_minor())
    cluster.kubectl("apply", "--filename", "-", input=variants.dump(docs))
    cluster.kubectl("--namespace", "web", "rollout", "status", "deployment/web", "--timeout=300s")
    pods = json.loads(
        cluster.kubectl(
            "--namespace", "web", "get", "pods", "-l", "app.kubernetes.io/name=web", "--output=json"
        )
    )["items"]
    assert pods, "the Deployment made no Pod"
    pod = pods[0]["metadata"]["name"]
    page = cluster.kubectl(
        "--namespace",
        "web",
        "exec",
        pod,
        "--container",
        "metrics-proxy",
        "--",
        "python3",
        "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').read().decode());"
        "print(u.urlopen('http://127.0.0.1:9113/metrics').read().decode())",
    )
    assert "Hello from the sidecars demo" in page
    assert "nginx_up 1" in page
