"""A Pod template (or its spec) shared by two workloads through a YAML anchor and alias is one
node: injecting the first changed the second too, and injecting the second then replaced the
first's injection, leaving the first workload wired to the second's ConfigMap (broken across
namespaces) and the first's ConfigMap unused, all reported as two clean injections."""

from __future__ import annotations

import pytest

from tests.unit.inject.test_edges import refused
from tests.unit.inject.test_golden import inject

WORKLOAD = """\
- apiVersion: apps/v1
  kind: Deployment
  metadata: {{name: {name}, namespace: {namespace}}}
  spec:
    selector: {{matchLabels: {{app: web}}}}
    template: {template}
"""
TEMPLATE = "{metadata: {labels: {app: web}}, spec: {containers: [{name: nginx, image: nginx}]}}"


def listed(*workloads: str) -> str:
    return "apiVersion: v1\nkind: List\nitems:\n" + "".join(workloads)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("&tpl " + TEMPLATE, "*tpl"),
        (
            "{metadata: {labels: {app: web}}, spec: &spec {containers: [{name: nginx, image: "
            "nginx}]}}",
            "{metadata: {labels: {app: api}}, spec: *spec}",
        ),
    ],
    ids=["template", "spec"],
)
def test_a_pod_template_shared_through_an_alias_is_refused(first: str, second: str) -> None:
    text = listed(
        WORKLOAD.format(name="web-a", namespace="a", template=first),
        WORKLOAD.format(name="web-b", namespace="b", template=second),
    )
    err = refused(text)
    assert "Deployment/web-b" in err and "Deployment/web-a" in err and "alias" in err, err


def test_an_alias_inside_one_workload_is_still_injected() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: &labels {app: web}}
  template:
    metadata: {labels: *labels}
    spec: {containers: [{name: nginx, image: nginx}]}
"""
    code, _, err = inject(text, [])
    assert code == 0, err
    assert "injected" in err and "replacing" not in err, err
