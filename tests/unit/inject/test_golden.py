"""Golden triples over the corpus (input, expected output, expected report), as istioctl and
linkerd test their injectors: refresh with SIDECARS_UPDATE_GOLDEN=1 and review the diff.
Every output is also idempotent and valid against the Kubernetes schema of its version."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils

from sidecars.inject import main as inject_main

CORPUS = Path(__file__).parent / "corpus"
UPDATE = os.environ.get("SIDECARS_UPDATE_GOLDEN") == "1"
VERSIONS = sorted(set(utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
NATIVE = [v for v in VERSIONS if tuple(map(int, v.split(".")[:2])) >= (1, 29)]
CLASSIC = ["1.25.0"]
# Kinds kubernetes-validate has no schema for (custom resources), and why they are not checked.
NO_SCHEMA = {"monitoring.coreos.com/v1": "prometheus-operator CRD: not in the built-in schemas"}

CASES: dict[str, list[str]] = {
    "helm-release": [],
    "kinds": [],
    "cronjob": [],
    "list": [],
    "confd": [],
    "classic": ["--kube-version", "1.25"],
    "parts-env": [
        "--app-container",
        "frontend",
        "--parts",
        "metrics-proxy,log-shipper",
        "--env",
        "LOG_SHIPPER_SINK=loki=http://loki.monitoring.svc:3100",
        "--env",
        "METRICS_PROXY_CONST_LABELS=team=shop",
        "--image-prefix",
        "ghcr.io/acme/sidecars/",
    ],
    "webhook": [
        "--reload",
        "webhook",
        "--env",
        "CONFIG_FETCHER_RELOAD_WEBHOOK=http://127.0.0.1:9000/-/reload",
        "--env",
        "CONFIG_FETCHER_SOURCE=https://config.example/site.tar.gz",
        "--env",
        "NGINX_PORT=9080",
        "--env",
        "CONFIG_FETCHER_INTERVAL=20",
    ],
}


def inject(text: str, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = inject_main.main(args, stdin=io.BytesIO(text.encode()), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def versions_for(args: list[str]) -> list[str]:
    return CLASSIC if "1.25" in args else NATIVE


def validate(text: str, versions: list[str]) -> None:
    docs = list(yaml.safe_load_all(text))  # PyYAML reads YAML 1.1, as kubectl does
    docs += [item for doc in docs if doc and doc.get("kind") == "List" for item in doc["items"]]
    for doc in docs:
        if not doc or doc.get("apiVersion") in NO_SCHEMA or doc.get("kind") == "List":
            continue
        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    args = CASES[name]
    code, out, err = inject((CORPUS / f"{name}.yaml").read_text(), args)
    assert code == 0, err
    golden, report = CORPUS / f"{name}.out.yaml", CORPUS / f"{name}.report"
    if UPDATE:
        golden.write_text(out)
        report.write_text(err)
    assert out == golden.read_text(), f"{golden} is stale (SIDECARS_UPDATE_GOLDEN=1 refreshes it)"
    assert err == report.read_text()


@pytest.mark.parametrize("name", CASES)
def test_injecting_the_output_again_changes_nothing(name: str) -> None:
    golden = (CORPUS / f"{name}.out.yaml").read_text()
    code, out, err = inject(golden, CASES[name])
    assert code == 0, err
    assert out == golden


@pytest.mark.parametrize("name", CASES)
def test_output_is_schema_valid(name: str) -> None:
    validate((CORPUS / f"{name}.out.yaml").read_text(), versions_for(CASES[name]))


def test_inputs_are_schema_valid_too() -> None:
    # The corpus is realistic: what the injector is given would be accepted by the cluster.
    for name, args in CASES.items():
        validate((CORPUS / f"{name}.yaml").read_text(), versions_for(args)[-1:])


def test_yaml_11_octals_and_quoting_come_back_as_written() -> None:
    # kubectl reads YAML 1.1, where 0644 is octal (420); a YAML 1.2 dump would turn it into the
    # decimal 644 (an invalid mode), and PyYAML would drop the comments.
    out = (CORPUS / "helm-release.out.yaml").read_text()
    assert "            defaultMode: 0644\n" in out
    assert "# Source: web/templates/deployment.yaml\n" in out
    assert "replicas: 3   # scaled by the HPA below\n" in out
    assert 'checksum/config: "5f1c0a9e"\n' in out and 'image: "nginx:1.27.2"\n' in out
    (deployment,) = (d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    (conf,) = (v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "conf")
    assert conf["configMap"]["defaultMode"] == 0o644


def test_help_and_the_command_list() -> None:
    from sidecars.__main__ import _usage

    code, out, _ = inject("", ["--help"])
    assert code == 0
    for flag in (
        "--kube-version",
        "--parts",
        "--app-container",
        "--env",
        "--reload",
        "--image-prefix",
        "-f",
    ):
        assert flag in out
    assert "inject" in _usage()


@pytest.mark.parametrize("name", [n for n in CASES if n != "list"])
def test_removing_what_the_marker_names_gives_back_the_input(name: str) -> None:
    from sidecars.inject import template
    from sidecars.inject.documents import split
    from sidecars.inject.stream import CONFIG_MAP_MARKER
    from sidecars.inject.wiring import uninject
    from sidecars.inject.workloads import WORKLOADS, pod_template

    def plain(data: object) -> object:
        return json.loads(json.dumps(data))

    tpl = template.packaged()
    out = [
        d.data
        for d in split((CORPUS / f"{name}.out.yaml").read_text())
        if d.data is not None
        and CONFIG_MAP_MARKER not in ((d.data.get("metadata") or {}).get("annotations") or {})
    ]
    given = [d.data for d in split((CORPUS / f"{name}.yaml").read_text()) if d.data is not None]
    assert len(out) == len(given)
    for after, before in zip(out, given, strict=True):
        if after["kind"] in WORKLOADS and (holder := pod_template(after)) is not None:
            uninject(holder, tpl, after)
        assert plain(after) == plain(before)
