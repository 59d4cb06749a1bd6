"""Where each kind keeps its Pod template, and which container is the app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# kind -> (apiVersion, path from the document to the Pod template's metadata/spec holder).
# A Pod is its own template; a CronJob's is reached through its jobTemplate.
WORKLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Pod": ("v1", ()),
    "ReplicationController": ("v1", ("spec", "template")),
    "Deployment": ("apps/v1", ("spec", "template")),
    "StatefulSet": ("apps/v1", ("spec", "template")),
    "DaemonSet": ("apps/v1", ("spec", "template")),
    "ReplicaSet": ("apps/v1", ("spec", "template")),
    "Job": ("batch/v1", ("spec", "template")),
    "CronJob": ("batch/v1", ("spec", "jobTemplate", "spec", "template")),
}
# Their Pods run to completion: classic sidecars would keep them running forever.
RUN_TO_COMPLETION = {"Job", "CronJob"}


def describe(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.get('kind')}/{name or '?'}"


def pod_template(doc: Any) -> Any | None:
    """The mapping holding the Pod template's ``metadata`` and ``spec``; None when missing."""
    _, path = WORKLOADS[doc["kind"]]
    node = doc
    for key in path:
        if not isinstance(node, Mapping) or not isinstance(node.get(key), Mapping):
            return None
        node = node[key]
    return node if isinstance(node.get("spec"), Mapping) else None


def image_name(image: str) -> str:
    """``registry:5000/team/nginx:1.27@sha256:...`` -> ``nginx``."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


# Images named nginx-* that are not nginx: what teams run beside it to export its metrics.
NOT_NGINX = ("exporter",)


def is_nginx_image(image: Any) -> bool:
    if not isinstance(image, str):
        return False
    name = image_name(image)
    if any(word in name.split("-") for word in NOT_NGINX):  # nginx-prometheus-exporter
        return False
    return name == "nginx" or name.startswith("nginx-")  # nginx, nginx-unprivileged
