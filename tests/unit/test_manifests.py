"""Every shipped manifest and every generated variant: valid against the Kubernetes schema
(kubernetes-validate, strict: unknown fields fail) and holding the Pod's security rules."""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import kubernetes_validate
import pytest

from k8s import variants
from sidecars import __version__

K8S = Path(__file__).resolve().parents[2] / "k8s"
APP = K8S / "pod.yaml"
CLASSIC = K8S / "classic" / "pod.yaml"
ORIGIN = K8S / "demo" / "origin.yaml"
SHIPPED = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
# `sidecars inject`'s input and outputs: checked by tests/unit/inject/test_k8s_manifests.py.
INJECTED = {
    K8S / "workloads" / "nginx-deployment.yaml",
    K8S / "deployment.yaml",
    K8S / "classic" / "deployment.yaml",
}
# Native sidecars need 1.29; the classic variant must also suit the oldest schema we have.
NATIVE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CLASSIC_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
UID = 101


def podman_variant(path: Path) -> list[variants.Doc]:
    return variants.podman_all(variants.load(path), host_ports={8080: 18080})


def pods_of(docs: list[variants.Doc]) -> list[variants.Doc]:
    return [doc for doc in docs if doc.get("kind") == "Pod"]


VARIANTS = {
    "pod.yaml": (lambda: variants.load(APP), NATIVE_VERSIONS),
    "classic/pod.yaml": (lambda: variants.load(CLASSIC), CLASSIC_VERSIONS),
    "demo/origin.yaml": (lambda: variants.load(ORIGIN), CLASSIC_VERSIONS),
    "podman(pod.yaml)": (lambda: podman_variant(APP), CLASSIC_VERSIONS),
    "podman(demo/origin.yaml)": (lambda: podman_variant(ORIGIN), CLASSIC_VERSIONS),
}


def test_every_shipped_manifest_is_covered():
    covered = {K8S / name for name in VARIANTS if "(" not in name} | INJECTED
    assert set(SHIPPED) <= covered, f"add to VARIANTS: {set(SHIPPED) - covered}"


@pytest.mark.parametrize("name", VARIANTS)
def test_schema_valid(name: str):
    load, versions = VARIANTS[name]
    docs = load()
    assert docs
    for version in versions:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_native_sidecar_is_rejected_by_pre_129_schema():
    # Proves the schema check has teeth: the field our native sidecar relies on is 1.29+.
    (pod,) = pods_of(variants.load(APP))
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(pod, "1.27.0", strict=True)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_container_is_locked_down(name: str):
    for pod in pods_of(VARIANTS[name][0]()):
        spec = pod["spec"]
        assert spec["enableServiceLinks"] is False
        assert spec["automountServiceAccountToken"] is False
        pod_seccomp = spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
        for container in variants.all_containers(spec):
            where = f"{name}: {container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] == UID and sc["runAsGroup"] == UID, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert (sc.get("seccompProfile", {}).get("type") or pod_seccomp) == "RuntimeDefault"
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, where


def _is_native_sidecar(container: dict) -> bool:
    return container.get("restartPolicy") == "Always"


@pytest.mark.parametrize("name", VARIANTS)
def test_probes(name: str):
    for pod in pods_of(VARIANTS[name][0]()):
        spec = pod["spec"]
        for container in spec.get("initContainers", []):
            if _is_native_sidecar(container):
                assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
            else:  # run-to-completion init containers take no probes
                assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(container)
        long_running = [c for c in spec.get("initContainers", []) if _is_native_sidecar(c)]
        for container in long_running + spec["containers"]:
            where = f"{name}: {container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where


def test_app_pod_shape():
    (pod,) = pods_of(variants.load(APP))
    spec = pod["spec"]
    assert spec["shareProcessNamespace"] is True  # the fetcher SIGHUPs the nginx master
    assert spec["securityContext"]["runAsUser"] == UID
    init, sidecar = spec["initContainers"][:2]
    assert "--once" in init["args"] and "--watch" in sidecar["args"]
    assert _is_native_sidecar(sidecar)
    fetcher = sidecar["livenessProbe"]["httpGet"]
    assert fetcher["path"] == "/healthz" and sidecar["ports"][0]["containerPort"] == 9101
    (nginx,) = (c for c in spec["containers"] if c["name"] == "nginx")
    assert nginx["ports"][0]["containerPort"] == 8080
    mounts = {m["name"]: m for m in nginx["volumeMounts"]}
    assert mounts["site"]["readOnly"] is True and mounts["site"]["mountPath"] == "/srv/site"
    assert {mounts[v]["mountPath"] for v in ("logs", "run", "cache")} == {
        "/var/log/nginx",
        "/run/nginx",
        "/var/cache/nginx",
    }
    assert {v["name"] for v in spec["volumes"]} == {
        "site",
        "logs",
        "run",
        "cache",
        "metrics-proxy-state",
        "log-shipper-state",
        "log-shipper-secrets",
    }
    for container in (init, sidecar):
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_log_shipper_sidecar():
    (pod,) = pods_of(variants.load(APP))
    spec = pod["spec"]
    (shipper,) = (c for c in spec["initContainers"] if c["name"] == "log-shipper")
    assert _is_native_sidecar(shipper)
    assert shipper["image"].startswith("localhost/sidecars/log-shipper:")
    env = {e["name"]: e for e in shipper["env"]}
    assert env["LOG_SHIPPER_FORMAT"]["value"] == "sidecars"
    assert env["LOG_SHIPPER_SINK"]["value"] == "stdout"  # kubectl logs shows the access log
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert shipper["ports"] == [{"name": "shipper-http", "containerPort": 9102}]
    assert shipper["startupProbe"]["httpGet"]["path"] == "/readyz"
    # /readyz means "started" (state loaded) and never depends on a sink: a sink outage must
    # neither kill a restarted shipper (startupProbe) nor make the Pod unready.
    assert shipper["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert shipper["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m for m in shipper["volumeMounts"]}
    # Read-write: it rotates (renames, deletes) nginx's logs.
    assert mounts["logs"] == {"name": "logs", "mountPath": "/var/log/nginx"}
    # The state file lives on a writable volume of its own, which outlives container restarts.
    state = mounts["log-shipper-state"]
    assert not state.get("readOnly")
    assert Path(env["LOG_SHIPPER_STATE_FILE"]["value"]).parent == Path(state["mountPath"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["log-shipper-state"]
    # Every path the shipper reads is on the logs volume.
    paths = env["LOG_SHIPPER_PATHS"]["value"].split(",")
    assert paths and all(Path(p).parent == Path("/var/log/nginx") for p in paths)


# The log-shipper's inline credential settings: in a Pod sharing its PID namespace with one UID,
# nginx could read them from /proc/<pid>/environ. Only their *_FILE forms belong in a manifest.
INLINE_SECRETS = {
    "LOG_SHIPPER_LOKI_PASSWORD",
    "LOG_SHIPPER_LOKI_BEARER_TOKEN",
    "LOG_SHIPPER_HTTP_HEADER",
}
SECRET_DIR = "/var/run/secrets/sidecars"


@pytest.mark.parametrize("name", VARIANTS)
def test_no_secret_in_env_or_args(name: str):
    for pod in pods_of(VARIANTS[name][0]()):
        for container in variants.all_containers(pod["spec"]):
            where = f"{name}: {container['name']}"
            for item in container.get("env", []):
                assert item["name"] not in INLINE_SECRETS, where
                assert "secretKeyRef" not in item.get("valueFrom", {}), where
            assert not any("password" in a or "token=" in a for a in container.get("args", []))


def test_credentials_volume_is_a_read_only_secret_of_the_log_shipper_alone():
    (pod,) = pods_of(variants.load(APP))
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    secret = volumes["log-shipper-secrets"]["secret"]
    # optional: the Pod (stdout sink) starts where no one created the Secret
    assert secret == {"secretName": "sidecars-credentials", "optional": True, "defaultMode": 0o440}
    mounted_by = {
        c["name"]: m
        for c in variants.all_containers(spec)
        for m in c.get("volumeMounts", [])
        if m["name"] == "log-shipper-secrets"
    }
    assert mounted_by == {
        "log-shipper": {"name": "log-shipper-secrets", "mountPath": SECRET_DIR, "readOnly": True}
    }
    # The commented examples point into that mount, at the keys the volume's comment names.
    text = APP.read_text()
    examples = [line.split("value:")[1].strip() for line in text.splitlines()
                if SECRET_DIR in line and "value:" in line]  # fmt: skip
    assert examples and all(Path(e).parent == Path(SECRET_DIR) for e in examples)
    assert all(Path(e).name in text.split("log-shipper-secrets", 2)[2] for e in examples)


def test_podman_variant_drops_the_secret_volume_and_its_mounts():
    (pod,) = pods_of(podman_variant(APP))
    spec = pod["spec"]
    assert not any("secret" in v for v in spec["volumes"])
    names = {v["name"] for v in spec["volumes"]}
    for container in variants.all_containers(spec):
        assert {m["name"] for m in container.get("volumeMounts", [])} <= names
    # Nothing else changes: the same mounts as in pod.yaml but that one.
    (source,) = pods_of(variants.load(APP))
    (shipper,) = (c for c in spec["containers"] if c["name"] == "log-shipper")
    (original,) = (c for c in source["spec"]["initContainers"] if c["name"] == "log-shipper")
    assert [m["mountPath"] for m in shipper["volumeMounts"]] == [
        m["mountPath"] for m in original["volumeMounts"] if m["name"] != "log-shipper-secrets"
    ]


def _bytes(quantity: str) -> int:
    """A Kubernetes quantity in Ki/Mi/Gi (all this project's manifests use)."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_logs_volume_and_ephemeral_storage_fit_the_shippers_cap():
    from sidecars.runtime.parsers import parse_size

    for docs in (variants.load(APP), variants.load(CLASSIC)):
        (pod,) = pods_of(docs)
        spec = pod["spec"]
        containers = variants.all_containers(spec)
        (shipper,) = (c for c in containers if c["name"] == "log-shipper")
        env = {e["name"]: e.get("value") for e in shipper["env"]}
        rotate = parse_size(env["LOG_SHIPPER_ROTATE_BYTES"])
        held = parse_size(env["LOG_SHIPPER_MAX_HELD_BYTES"])
        assert held >= 2 * rotate  # the shipper's own rule
        volumes = {v["name"]: v.get("emptyDir", {}) for v in spec["volumes"]}
        logs_limit = _bytes(volumes["logs"]["sizeLimit"])
        live_files = len(env["LOG_SHIPPER_PATHS"].split(","))
        # held (rotated + unacknowledged) + the acknowledged part of each live file, with slack
        assert logs_limit >= held + live_files * rotate + 32 * 1024**2
        for container in containers:
            resources = container["resources"]
            assert "ephemeral-storage" in resources["requests"], container["name"]
            assert "ephemeral-storage" in resources["limits"], container["name"]
        (nginx,) = (c for c in containers if c["name"] == "nginx")
        assert _bytes(nginx["resources"]["limits"]["ephemeral-storage"]) > logs_limit
        long_running = [c for c in containers if c in spec["containers"] or "restartPolicy" in c]
        pod_limit = sum(_bytes(c["resources"]["limits"]["ephemeral-storage"]) for c in long_running)
        sized = sum(_bytes(v["sizeLimit"]) for v in volumes.values() if "sizeLimit" in v)
        assert pod_limit > sized


@pytest.mark.parametrize("path", [APP, ORIGIN])
def test_images_are_this_version_and_pulled_only_if_absent(path: Path):
    for pod in pods_of(variants.load(path)):
        for container in variants.all_containers(pod["spec"]):
            assert container["image"].endswith(f":{__version__}"), container["image"]
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_classic_file_is_generated_from_pod_yaml():
    expected = variants.CLASSIC_HEADER + variants.dump(
        variants.classic(doc) for doc in variants.load(APP)
    )
    assert CLASSIC.read_text() == expected, (
        "k8s/classic/pod.yaml is stale: python3 k8s/variants.py classic k8s/pod.yaml "
        "> k8s/classic/pod.yaml"
    )


# ---- the transforms themselves (pure functions) ------------------------------------------


def test_classic_moves_native_sidecars_before_app_containers():
    (pod,) = pods_of(variants.load(APP))
    out = variants.classic(pod)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["config-fetcher-init"]
    sidecars = [c["name"] for c in pod["spec"]["initContainers"] if _is_native_sidecar(c)]
    assert sidecars[0] == "config-fetcher"
    assert [c["name"] for c in out["spec"]["containers"]] == [*sidecars, "nginx"]
    assert all("restartPolicy" not in c for c in variants.all_containers(out["spec"]))
    assert pod["spec"]["initContainers"][1]["restartPolicy"] == "Always"  # input untouched


def test_classic_drops_empty_init_list():
    pod = {"kind": "Pod", "spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}]}}
    out = variants.classic(pod)
    assert "initContainers" not in out["spec"]
    assert out["spec"]["containers"] == [
        {"name": "s", "lifecycle": {"preStop": variants.PRESTOP_WAIT_FOR_NGINX}}
    ]


def _nginx_shutdown_timeout() -> int:
    conf = (K8S.parent / "apps" / "nginx" / "nginx.conf").read_text()
    (value,) = re.findall(r"^worker_shutdown_timeout (\d+)s;", conf, re.M)
    return int(value)


def test_shutdown_budget_adds_up():
    """terminationGracePeriodSeconds covers nginx's graceful stop, then the shipper's drain
    (native: sidecars stop after nginx; classic: their preStop waits for nginx to exit)."""
    (pod,) = pods_of(variants.load(APP))
    spec = pod["spec"]
    (shipper,) = (c for c in spec["initContainers"] if c["name"] == "log-shipper")
    drain = float({e["name"]: e for e in shipper["env"]}["LOG_SHIPPER_DRAIN_TIMEOUT"]["value"])
    nginx_stop = _nginx_shutdown_timeout()
    grace = spec["terminationGracePeriodSeconds"]
    assert nginx_stop + drain < grace
    assert nginx_stop < variants.NGINX_EXIT_WAIT_S  # the preStop outwaits nginx's stop
    assert variants.NGINX_EXIT_WAIT_S + drain < grace
    (classic,) = pods_of(variants.load(CLASSIC))
    for container in classic["spec"]["containers"]:
        hook = container.get("lifecycle", {}).get("preStop")
        if container["name"] == "nginx":
            assert hook is None
        else:  # every sidecar waits for nginx to exit before its SIGTERM
            assert hook == variants.PRESTOP_WAIT_FOR_NGINX, container["name"]
            command = hook["exec"]["command"]
            assert command[:3] == ["python", "-m", "sidecars.runtime.nginx_exit"]
            assert importlib.util.find_spec(command[2]) is not None


def test_podman_variant():
    docs = variants.load(APP) + variants.load(ORIGIN)
    out = variants.podman_all(
        docs,
        name="other",
        host_ports={8080: 18080},
        env={"CONFIG_FETCHER_SOURCE": "http://o:1/x.tar.gz"},
    )
    assert [d["kind"] for d in out] == ["Pod", "Pod"]  # the Service is dropped
    app = out[0]
    assert app["metadata"]["name"] == "other"
    assert app["metadata"]["annotations"][variants.PODMAN_KEEP_INIT] == "always"
    assert app["spec"]["restartPolicy"] == "Never"
    containers = variants.all_containers(app["spec"])
    assert {c["imagePullPolicy"] for c in containers} == {"Never"}
    nginx = next(c for c in containers if c["name"] == "nginx")
    assert nginx["ports"][0]["hostPort"] == 18080
    # emptyDirs become per-Pod named volumes.
    assert {v["name"] for v in app["spec"]["volumes"]} == {
        "other-site",
        "other-logs",
        "other-run",
        "other-cache",
        "other-metrics-proxy-state",
        "other-log-shipper-state",
    }
    assert {m["name"] for m in nginx["volumeMounts"]} == {
        "other-site",
        "other-logs",
        "other-run",
        "other-cache",
    }
    for c in containers:
        env = {e["name"]: e for e in c.get("env", [])}
        if "CONFIG_FETCHER_SOURCE" in env:
            assert env["CONFIG_FETCHER_SOURCE"] == {
                "name": "CONFIG_FETCHER_SOURCE",
                "value": "http://o:1/x.tar.gz",
            }
            assert env["POD_NAMESPACE"] == {"name": "POD_NAMESPACE", "value": "default"}


def test_podman_variant_rejects_env_no_container_declares():
    with pytest.raises(ValueError, match="CONFIG_FETCHER_TYPO: no container"):
        variants.podman_all(variants.load(APP), env={"CONFIG_FETCHER_TYPO": "x"})


def test_variants_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert variants.main(["podman", str(APP), "--host-port", "8080=1", "--name", "x"]) == 0
    assert "hostPort: 1\n" in capsys.readouterr().out
    assert variants.main(["podman", str(APP), "--env", "NOPE=1"]) == 2
    assert "NOPE: no container of the manifest declares it" in capsys.readouterr().err
    assert variants.main(["classic", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        variants.main(["podman", str(APP), "--host-port", "http"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_dump_writes_no_yaml_aliases():
    # pod.yaml shares env/securityContext through anchors; a variant must spell them out.
    text = variants.dump(variants.load(APP))
    assert "&id" not in text and "*id" not in text
    assert variants.load_text(text) == variants.load(APP)


def test_schema_check_catches_a_typo():
    (pod,) = pods_of(variants.load(APP))
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.29.0", strict=True)
