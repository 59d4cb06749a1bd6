"""k8s/deployment.yaml and k8s/classic/deployment.yaml are `sidecars inject` of the plain
workload k8s/workloads/nginx-deployment.yaml; the template is k8s/variants.py's of pod.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

from k8s import variants
from sidecars.inject import nginx_conf, template
from tests.unit.inject.test_golden import CLASSIC, NATIVE, inject, validate

ROOT = Path(__file__).resolve().parents[3]
PLAIN = ROOT / "k8s" / "workloads" / "nginx-deployment.yaml"
GENERATED = {
    ROOT / "k8s" / "deployment.yaml": ([], NATIVE),
    ROOT / "k8s" / "classic" / "deployment.yaml": (["--kube-version", "1.25"], CLASSIC),
}
TEMPLATE = ROOT / "sidecars" / "inject" / "template.yaml"


def test_template_is_generated_from_pod_yaml() -> None:
    expected = variants.template_text((ROOT / "k8s" / "pod.yaml").read_text())
    assert TEMPLATE.read_text() == expected, (
        "sidecars/inject/template.yaml is stale: python3 k8s/variants.py template k8s/pod.yaml "
        "> sidecars/inject/template.yaml"
    )


def test_deployments_are_generated_from_the_plain_workload() -> None:
    for path, (args, _) in GENERATED.items():
        code, out, err = inject(PLAIN.read_text(), args)
        assert code == 0, err
        assert path.read_text() == out, (
            f"{path.relative_to(ROOT)} is stale: python -m sidecars inject {' '.join(args)} "
            f"-f k8s/workloads/nginx-deployment.yaml > {path.relative_to(ROOT)}"
        )


def test_schema_valid_for_every_version() -> None:
    validate(PLAIN.read_text(), NATIVE)
    for path, (_, versions) in GENERATED.items():
        validate(path.read_text(), versions)


def _pod(path: Path) -> dict:
    (deployment,) = (d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Deployment")
    return deployment["spec"]["template"]


def test_every_container_is_locked_down_and_probed() -> None:
    for path in GENERATED:
        spec = _pod(path)["spec"]
        assert spec["shareProcessNamespace"] is True  # --reload signal
        for c in variants.all_containers(spec):
            where = f"{path.name}: {c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 101, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert set(c["resources"]["limits"]) >= {"cpu", "memory"}, where
            long_running = c.get("restartPolicy") == "Always" or c in spec["containers"]
            assert long_running == ("livenessProbe" in c), where


def test_wiring_matches_the_network_policy_and_pod_monitor() -> None:
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "deployment.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    pod = _pod(ROOT / "k8s" / "deployment.yaml")
    proxy = next(c for c in pod["spec"]["initContainers"] if c["name"] == "metrics-proxy")
    port = proxy["ports"][0]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"])
    assert kinds["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == port["name"]
    ingress = kinds["NetworkPolicy"]["spec"]["ingress"]
    metrics_rule = next(r for r in ingress if "from" in r)
    assert metrics_rule["ports"] == [{"port": port["containerPort"], "protocol": "TCP"}]
    namespace = metrics_rule["from"][0]["namespaceSelector"]["matchLabels"]
    assert namespace == {"kubernetes.io/metadata.name": "monitoring"}
    egress_ports = {p["port"] for r in kinds["NetworkPolicy"]["spec"]["egress"] for p in r["ports"]}
    assert {53, 8090} <= egress_ports  # DNS and the config origin (the fetcher's source URL)
    fetcher = pod["spec"]["initContainers"][0]
    source = next(e["value"] for e in fetcher["env"] if e["name"] == "CONFIG_FETCHER_SOURCE")
    assert ":8090/" in source
    conf = kinds["ConfigMap"]["data"][nginx_conf.CONF_KEY]
    assert "listen 127.0.0.1:8081;" in conf and "include /srv/site/conf.d/*.conf;" in conf
    nginx = next(c for c in pod["spec"]["containers"] if c["name"] == "nginx")
    mounts = {m["mountPath"]: m for m in nginx["volumeMounts"]}
    assert mounts["/etc/nginx/conf.d/sidecars.conf"]["subPath"] == nginx_conf.CONF_KEY
    assert mounts[nginx_conf.LOGS_IN_APP]["name"] == "logs"


def test_conf_agrees_with_the_project_nginx_conf_and_the_parts_settings() -> None:
    own = (ROOT / "apps" / "nginx" / "nginx.conf").read_text()
    words = " ".join(nginx_conf.LOG_FORMAT.split())
    assert words in " ".join(own.split())  # the same log_format the sidecars parse
    tpl = template.packaged()
    assert tpl.env_value("metrics-proxy", "METRICS_PROXY_STUB_STATUS_URL").startswith(
        "http://127.0.0.1:"
    )
    # The sidecars read access.log/error.log at the root of the `logs` volume, which nginx
    # writes as LOGS_IN_APP/access.log and LOGS_IN_APP/error.log.
    assert tpl.env_value("metrics-proxy", "METRICS_PROXY_ACCESS_LOG") == "/var/log/nginx/access.log"
    paths = tpl.env_value("log-shipper", "LOG_SHIPPER_PATHS").split(",")
    assert paths == ["/var/log/nginx/access.log", "/var/log/nginx/error.log"]
    sidecar_logs = {
        m["mountPath"]
        for c in tpl.raw["initContainers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "logs"
    }
    assert sidecar_logs == {"/var/log/nginx"}


def test_podman_variant_drops_annotations_podman_refuses() -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"short": "x", "long": "y" * 64}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    (out,) = variants.podman_all([pod])
    assert out["metadata"]["annotations"] == {"short": "x", variants.PODMAN_KEEP_INIT: "always"}
