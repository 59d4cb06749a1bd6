"""Every refusal: exit 2, one line on stderr naming the problem, nothing on stdout."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.unit.inject.test_golden import CORPUS, inject

DEPLOYMENT = (CORPUS / "classic.yaml").read_text()


def with_spec(extra: str) -> str:
    """The plain Deployment with ``extra`` (YAML at the Pod spec's indentation) added."""
    return DEPLOYMENT + textwrap.indent(textwrap.dedent(extra), " " * 6)


CASES = {
    "broken YAML": (
        "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [x}\n",
        [],
        "document 2, line 6: broken YAML: ",
    ),
    "duplicate key": (
        "---\napiVersion: v1\nkind: Pod\nkind: Service\n",
        [],
        "document 1, line 4: broken YAML: ",
    ),
    "no kind": (
        "apiVersion: v1\nmetadata: {name: x}\n",
        [],
        "document 1, line 1: not a Kubernetes object: no kind",
    ),
    "not a mapping": ("- a\n- b\n", [], "not a Kubernetes object: a CommentedSeq"),
    "unknown kind": (
        DEPLOYMENT.replace("apps/v1", "extensions/v1beta1"),
        [],
        "document 1, line 1: unknown kind extensions/v1beta1 Deployment (sidecars inject "
        "knows apps/v1 Deployment)",
    ),
    "container clash": (
        DEPLOYMENT + "        - name: log-shipper\n          image: busybox\n",
        [],
        "container 'log-shipper' already exists: sidecars inject adds its own; rename yours",
    ),
    "volume clash": (
        with_spec("volumes:\n  - name: logs\n    emptyDir: {}\n"),
        [],
        "volume 'logs' already exists: sidecars inject adds its own; rename yours",
    ),
    "mount path clash": (
        DEPLOYMENT + "          volumeMounts:\n            - {name: x, mountPath: /srv/site}\n",
        [],
        "container 'nginx' already mounts /srv/site, where sidecars inject mounts its 'site'",
    ),
    "volume over conf.d": (
        DEPLOYMENT
        + "          volumeMounts:\n            - {name: x, mountPath: /etc/nginx/conf.d}\n",
        [],
        "container 'nginx' mounts a volume at /etc/nginx/conf.d: sidecars inject cannot add",
    ),
    "two nginx containers": (
        DEPLOYMENT + "        - name: other\n          image: nginx:1.26\n",
        [],
        "containers 'nginx', 'other' all run nginx images: name one with --app-container",
    ),
    "Job with classic sidecars": (
        (CORPUS / "cronjob.yaml").read_text(),
        ["--kube-version", "1.28"],
        "document 1, line 1: CronJob/report: classic sidecars (Kubernetes before 1.29) never "
        "exit, so its Pods would never complete; use --kube-version 1.29 or later",
    ),
    "run-to-completion Pod with classic sidecars": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Never\n"
        "  containers: [{name: nginx, image: nginx}]\n",
        ["--kube-version", "1.27"],
        "Pod/p: classic sidecars",
    ),
    "a List item that is no object": (
        "apiVersion: v1\nkind: List\nitems:\n- 3\n",
        [],
        "document 1, line 1: item 1: not a Kubernetes object",
    ),
    "a foreign marker": (
        DEPLOYMENT.replace(
            "      labels: {app: web}\n",
            "      labels: {app: web}\n      annotations: {sidecars.inject/status: nope}\n",
        ),
        [],
        "annotation sidecars.inject/status is not what sidecars inject writes",
    ),
    "workload without a name": (
        DEPLOYMENT.replace("  name: web\n", "  labels: {}\n", 1),
        [],
        "Deployment has no metadata.name",
    ),
    "unknown setting": (
        DEPLOYMENT,
        ["--env", "LOG_SHIPPER_SINKS=stdout"],
        "--env LOG_SHIPPER_SINKS: unknown setting of log-shipper (did you mean LOG_SHIPPER_SINK?)",
    ),
    "invalid value": (
        DEPLOYMENT,
        ["--env", "CONFIG_FETCHER_INTERVAL=soon"],
        "--env CONFIG_FETCHER_INTERVAL: invalid value 'soon'",
    ),
    "invalid item of a repeatable setting": (
        DEPLOYMENT,
        ["--env", "LOG_SHIPPER_SINK=stdout,gopher://x"],
        "--env LOG_SHIPPER_SINK: invalid value 'gopher://x'",
    ),
    "setting of a part not injected": (
        DEPLOYMENT,
        ["--parts", "metrics-proxy", "--env", "LOG_SHIPPER_SINK=stdout"],
        "--env LOG_SHIPPER_SINK: log-shipper is not among --parts",
    ),
    "name of no part": (
        DEPLOYMENT,
        ["--env", "NGINX_WORKERS=2"],
        "--env NGINX_WORKERS: not a setting of any part",
    ),
    "settings that conflict": (
        DEPLOYMENT,
        ["--env", "CONFIG_FETCHER_INTERVAL=600"],
        "config-fetcher (config-fetcher) would not start: --stale-after (300s) must be longer "
        "than --interval (600s)",
    ),
    "injected, then the app renamed": (
        (CORPUS / "classic.out.yaml").read_text().replace("image: nginx:1.27", "image: httpd:2"),
        ["--kube-version", "1.25"],
        "injected before, but now no container runs an nginx image",
    ),
    "a marker naming a pod field of the user's": (
        (CORPUS / "classic.out.yaml")
        .read_text()
        .replace('"pod":["shareProcessNamespace"', '"pod":["containers","shareProcessNamespace"'),
        ["--kube-version", "1.25"],
        "annotation sidecars.inject/status names pod ['containers', 'shareProcessNamespace', ",
    ),
    "a marker naming a conf.d volume that is not there": (
        (CORPUS / "confd.out.yaml")
        .read_text()
        .replace('\\"volume\\":\\"server-blocks\\"', '\\"volume\\":\\"nope\\"'),
        [],
        "annotation sidecars.inject/status names a conf.d volume it cannot restore",
    ),
    "no NAME=VALUE": (DEPLOYMENT, ["--env", "CONFIG_FETCHER_SOURCE"], "expected NAME=VALUE"),
    "unknown part": (DEPLOYMENT, ["--parts", "log-shipper,tracer"], "--parts 'log-shipper,tracer'"),
    "bad version": (DEPLOYMENT, ["--kube-version", "latest"], "--kube-version 'latest': expected"),
    "webhook without URL": (
        DEPLOYMENT,
        ["--reload", "webhook"],
        "--reload webhook needs --env CONFIG_FETCHER_RELOAD_WEBHOOK=URL",
    ),
    "unknown flag": (DEPLOYMENT, ["--namespace", "x"], "unrecognized arguments: --namespace x"),
}


@pytest.mark.parametrize("name", CASES)
def test_refused_with_one_line_and_nothing_on_stdout(name: str) -> None:
    text, args, expected = CASES[name]
    code, out, err = inject(text, args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sidecars inject: "), err
    assert expected in err, err


def test_a_missing_file(tmp_path: Path) -> None:
    code, out, err = inject("", ["-f", str(tmp_path / "nope.yaml")])
    assert (code, out) == (2, "")
    assert "cannot read" in err and "nope.yaml" in err


def test_an_error_in_a_late_document_writes_nothing_of_the_early_ones() -> None:
    text = DEPLOYMENT + "---\n" + DEPLOYMENT.replace("apps/v1", "apps/v1beta2")
    code, out, err = inject(text, [])
    assert (code, out) == (2, "")
    assert err.startswith("sidecars inject: document 2, line 15: unknown kind apps/v1beta2")
