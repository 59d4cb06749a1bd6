"""checkov on an injected manifest: what injection adds brings no failed check of its own, and
each check it waives is a skip annotation, with its reason, where checkov reads it (the
workload's own metadata: for a Deployment or a CronJob that is not the Pod template's).

The input is a workload that passes checkov as it is (image by digest, pulled Always, a high
UID, a NetworkPolicy), so every failure in the output would be one injection brought in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sidecars.inject import template
from tests.unit.inject.test_golden import inject
from tests.unit.test_scanners import run, scanner

ROOT = Path(__file__).resolve().parents[3]
DIGEST = "docker.io/library/nginx:1.27@sha256:" + "0" * 64


def hardened() -> str:
    """k8s/workloads/nginx-deployment.yaml without its checkov skips, made to pass without
    them, plus a CronJob of the same nginx with no namespace (kubectl -n sets it)."""
    text = (ROOT / "k8s" / "workloads" / "nginx-deployment.yaml").read_text()
    text = re.sub(r"  # checkov:.*\n  annotations:\n(    checkov\.io/skip.*\n)+", "", text)
    assert "checkov.io/skip" not in text
    text = text.replace("image: docker.io/library/nginx:1.27", f"image: {DIGEST}")
    text = text.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Always")
    text = text.replace("runAsUser: 101", "runAsUser: 10001").replace(
        "runAsGroup: 101", "runAsGroup: 10001"
    )
    docs = list(yaml.safe_load_all(text))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = dict(deployment["spec"]["template"]["spec"])
    # checkov reads a CronJob's seccomp profile from its Pod's securityContext only.
    pod["securityContext"] = {
        **pod["securityContext"],
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report"},
        "spec": {
            "schedule": "0 * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
                        "spec": {
                            **deployment["spec"]["template"]["spec"],
                            "restartPolicy": "Never",
                        },
                    }
                }
            },
        },
    }
    return text + "---\n" + yaml.safe_dump(cronjob, sort_keys=False)


def findings(path: Path) -> dict[str, list[dict]]:
    proc = run(
        [
            scanner("checkov"),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "-d",
            str(path),
        ],
        cwd=path,
        drop_env=("CKV_", "BC_", "CHECKOV_"),
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    results: dict[str, list[dict]] = {"failed_checks": [], "skipped_checks": []}
    for report in reports:
        for key in results:
            results[key] += report["results"][key]
    return results


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict]]]:
    text = hardened()
    code, out, err = inject(text, [])
    assert code == 0, err
    got = {}
    for name, manifest in (("input", text), ("output", out)):
        folder = tmp_path_factory.mktemp(name)
        (folder / "manifest.yaml").write_text(manifest)
        got[name] = findings(folder)
    return got


def test_the_input_passes_as_it_is(scanned: dict) -> None:
    failed = {(c["check_id"], c["resource"]) for c in scanned["input"]["failed_checks"]}
    # The user's own, about their CronJob: its namespace is kubectl -n's, and checkov reads a
    # CronJob's seccomp profile from the legacy annotation only.
    assert failed == {
        ("CKV_K8S_21", "CronJob.default.report"),
        ("CKV_K8S_31", "CronJob.default.report"),
    }


def test_injection_brings_no_failed_check(scanned: dict) -> None:
    before = {(c["check_id"], c["resource"]) for c in scanned["input"]["failed_checks"]}
    after = {(c["check_id"], c["resource"]) for c in scanned["output"]["failed_checks"]}
    assert after - before == set(), json.dumps(sorted(after - before), indent=1)
    skipped = {(c["check_id"], c["resource"]) for c in scanned["output"]["skipped_checks"]}
    assert before & skipped == set()  # and it waives none of the user's findings


def test_each_waived_check_carries_the_reason_from_the_template(scanned: dict) -> None:
    reasons = {}
    for value in template.packaged().annotations.values():
        check, _, reason = str(value).partition("=")
        reasons[check] = reason
    skipped = scanned["output"]["skipped_checks"]
    assert {c["resource"] for c in skipped} >= {"Deployment.web.web", "CronJob.default.report"}
    for check in skipped:
        comment = check["check_result"].get("suppress_comment")
        assert comment == reasons[check["check_id"]], check
