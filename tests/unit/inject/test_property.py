"""Property: for any Deployment of nginx with extra containers, init containers, volumes and
annotations, injection keeps everything of the user's, removing it restores the input exactly,
and injecting twice equals injecting once. Bounded to a few seconds."""

from __future__ import annotations

import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecars.inject import template
from sidecars.inject.documents import split
from sidecars.inject.wiring import uninject
from sidecars.inject.workloads import pod_template
from tests.unit.inject.test_golden import inject

TPL = template.packaged()
OURS = {n for p in TPL.part_order for n in TPL.containers_of(p)}
OUR_VOLUMES = TPL.volumes_for(TPL.part_order) | {"sidecars-nginx-conf"}

OUR_PORTS = {9101, 9102, 9113, 8081}
SKIP_KEYS = [f"checkov.io/skip{n}" for n in range(1, 5)]
SKIP_VALUES = ["CKV_K8S_43=pinned by our CD", "CKV_K8S_8=no probe here", "CKV_K8S_15"]
names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True).filter(
    lambda n: n not in OURS and n not in OUR_VOLUMES and n != "chart-conf"
)
values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@st.composite
def deployments(draw: st.DrawFn) -> dict:
    container_names = draw(st.lists(names, min_size=0, max_size=3, unique=True))
    init_names = draw(
        st.lists(names, max_size=2, unique=True).filter(
            lambda ns: not set(ns) & set(container_names) and "nginx" not in ns
        )
    )
    volume_names = draw(st.lists(names, max_size=3, unique=True))
    nginx = {"name": "nginx", "image": "nginx:1.27"}
    ports = draw(
        st.lists(
            st.integers(1, 65535).filter(lambda p: p not in OUR_PORTS), max_size=2, unique=True
        )
    )
    if ports:
        nginx["ports"] = [{"containerPort": p, "name": f"p{i}"} for i, p in enumerate(ports)]
    if volume_names:
        nginx["volumeMounts"] = [{"name": volume_names[0], "mountPath": "/data"}]
    others = [
        {"name": n, "image": f"busybox:{i}"} for i, n in enumerate(container_names) if n != "nginx"
    ]
    containers = draw(st.permutations([nginx, *others]))
    spec: dict = {"containers": containers}
    if init_names:
        spec["initContainers"] = [{"name": n, "image": "busybox"} for n in init_names]
    if volume_names:
        spec["volumes"] = [{"name": n, "emptyDir": {}} for n in volume_names]
    if draw(st.booleans()):  # the chart's server blocks as a ConfigMap over conf.d
        conf = {"name": "chart-conf", "configMap": {"name": "chart"}}
        if draw(st.booleans()):
            conf["configMap"]["defaultMode"] = 0o644
        spec.setdefault("volumes", []).append(conf)
        nginx.setdefault("volumeMounts", []).append(
            {"name": "chart-conf", "mountPath": "/etc/nginx/conf.d"}
        )
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(st.integers(0, 600))
    if draw(st.booleans()):
        spec["securityContext"] = {"runAsUser": draw(st.integers(0, 65535))}
    meta: dict = {"labels": {"app": "web"}}
    annotations = draw(
        st.dictionaries(
            st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?/[a-z]{1,8}", fullmatch=True),
            values,
            max_size=3,
        )
    )
    if annotations:
        meta["annotations"] = annotations
    top: dict = {"name": "web"}
    # The user's own checkov skips on the workload: ours go beside them, under free keys.
    skips = draw(
        st.dictionaries(st.sampled_from(SKIP_KEYS), st.sampled_from(SKIP_VALUES), max_size=3)
    )
    if skips:
        top["annotations"] = skips
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": top,
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": meta, "spec": spec},
        },
    }


def plain(data: object) -> object:
    return json.loads(json.dumps(data))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deployments(), st.sampled_from(["1.29", "1.25"]))
def test_nothing_lost_exactly_undone_and_idempotent(doc: dict, version: str) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    code, out, err = inject(text, ["--kube-version", version])
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    (workload,) = (d for d in docs if d["kind"] == "Deployment")
    before, after = doc["spec"]["template"], workload["spec"]["template"]
    # Everything of the user's is still there, unchanged (the app only gains mounts).
    for key in ("initContainers", "containers"):
        got = {c["name"]: c for c in after["spec"].get(key, [])}
        for c in before["spec"].get(key, []):
            if c["name"] == "nginx":
                mounts = got["nginx"].get("volumeMounts", [])
                assert mounts[: len(c.get("volumeMounts", []))] == c.get("volumeMounts", [])
            else:
                assert got[c["name"]] == c
    kept = {v["name"]: v for v in after["spec"]["volumes"]}
    for volume in before["spec"].get("volumes", []):
        if volume["name"] == "chart-conf":  # now projected: the chart's ConfigMap, then ours
            projected = kept["chart-conf"]["projected"]
            assert projected["sources"][0] == {"configMap": {"name": "chart"}}
            assert projected.get("defaultMode") == volume["configMap"].get("defaultMode")
        else:
            assert kept[volume["name"]] == volume
    for key, value in before["metadata"].get("annotations", {}).items():
        assert after["metadata"]["annotations"][key] == value
    theirs = doc["metadata"].get("annotations", {})
    for key, value in theirs.items():  # the user's skips, untouched
        assert workload["metadata"]["annotations"][key] == value
    check = {k: str(v).partition("=")[0] for k, v in workload["metadata"]["annotations"].items()}
    added = [c for k, c in check.items() if k not in theirs]
    assert not set(added) & {check[k] for k in theirs}, "a check the user skips, skipped again"
    assert len(added) == len(set(added)) and set(check.values()) >= {
        "CKV_K8S_43",
        "CKV_K8S_15",
        "CKV_K8S_40",
    }
    if "terminationGracePeriodSeconds" in before["spec"]:
        assert (
            after["spec"]["terminationGracePeriodSeconds"]
            == before["spec"]["terminationGracePeriodSeconds"]
        )
    if "securityContext" in before["spec"]:
        ours = after["spec"]["securityContext"]
        assert {**ours, **before["spec"]["securityContext"]} == ours
    # Removing what the marker names gives back the input exactly.
    (injected,) = (d for d in split(out) if d.data["kind"] == "Deployment")
    holder = pod_template(injected.data)
    assert uninject(holder, TPL, injected.data) is not None
    assert plain(injected.data) == plain(doc)
    # And injecting the output again changes nothing.
    code, again, err = inject(out, ["--kube-version", version])
    assert (code, again) == (0, out), err
