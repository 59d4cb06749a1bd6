"""A key present with no value (``metadata:``, ``annotations:``, ``volumes:``...) is valid YAML
that kubectl reads as absent. Injection fills it in place; removal deleted the key instead of
giving it back empty, so removal did not restore the input and re-injection moved the key
(running inject on its own output changed it)."""

from __future__ import annotations

import pytest

from sidecars.inject.documents import dump, load_one, split
from sidecars.inject.wiring import uninject
from tests.unit.inject.test_golden import inject
from tests.unit.inject.test_property import TPL

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:{workload}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:{template}
    spec:
      initContainers:
      volumes:
      securityContext:
      containers:
      - name: nginx
        image: nginx
        volumeMounts:
"""


@pytest.mark.parametrize(
    ("workload", "template"),
    [("", ""), ("", "\n      annotations:"), ("", "\n      labels: {app: web}")],
    ids=["metadata-null", "annotations-null", "labels-only"],
)
def test_empty_keys_come_back_empty_and_reinjection_changes_nothing(
    workload: str, template: str
) -> None:
    text = DEPLOYMENT.format(workload=workload, template=template)
    code, once, err = inject(text, [])
    assert code == 0, err
    code, twice, err = inject(once, [])
    assert code == 0, err
    assert twice == once
    (injected,) = (d for d in split(once) if d.data["kind"] == "Deployment")
    doc = injected.data
    assert uninject(doc["spec"]["template"], TPL, doc) is not None
    assert dump(doc) == dump(load_one(text))  # keys, order and empty values as they were
