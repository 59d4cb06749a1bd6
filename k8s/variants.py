#!/usr/bin/env python3
"""Derive the other Pod variants from the one source of truth, k8s/pod.yaml.

  classic  native sidecars (initContainers with restartPolicy: Always) become regular
           containers, for clusters older than 1.29 and engines without native sidecars.
           Committed as k8s/classic/pod.yaml (a unit test keeps it in step with pod.yaml).
  podman   classic, plus what `podman kube play` needs: restartPolicy Never (it restarts init
           containers forever otherwise), init containers kept for their logs, images only from
           local storage, emptyDirs named per Pod (podman makes each a named volume, shared by
           every pod using that name), Secret volumes dropped with their mounts (4.3 cannot play
           them; the manifest's is optional, so the Pod is the same as without the Secret),
           Services dropped, and optional hostPorts / env / name.

  template what `sidecars inject` adds to a workload: everything in pod.yaml that is not the app
           container (nginx) or a volume only it mounts. Committed as
           sidecars/inject/template.yaml (package data; a unit test keeps it in step).

  python3 k8s/variants.py classic k8s/pod.yaml > k8s/classic/pod.yaml
  python3 k8s/variants.py template k8s/pod.yaml > sidecars/inject/template.yaml
  python3 k8s/variants.py podman k8s/pod.yaml --host-port 8080=18080 \
      --env CONFIG_FETCHER_SOURCE=http://my-origin:8090/site.tar.gz | podman kube play -

Pure functions on parsed YAML documents; only main() reads and writes files.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

CLASSIC_HEADER = """\
# GENERATED from k8s/pod.yaml for clusters older than Kubernetes 1.29 (no native sidecars):
# its native sidecars run as regular containers. Do not edit; regenerate with
#   python3 k8s/variants.py classic k8s/pod.yaml > k8s/classic/pod.yaml
"""

# Classic Pods stop every container at once: each sidecar's preStop waits (at most this long)
# until nginx has exited, so the sidecars, above all the log-shipper reading what nginx writes
# while it stops, get SIGTERM after nginx. pod.yaml's terminationGracePeriodSeconds counts it.
NGINX_EXIT_WAIT_S = 15
PRESTOP_WAIT_FOR_NGINX = {
    "exec": {
        "command": [
            "python", "-m", "sidecars.runtime.nginx_exit", "--wait",
            f"--timeout={NGINX_EXIT_WAIT_S}",
        ]
    }
}  # fmt: skip

# podman deletes init containers after they succeed unless the Pod carries this annotation.
PODMAN_KEEP_INIT = "io.podman.annotations.init.container.type"
# podman 4.3 refuses annotation values longer than a label's 63 characters ("value length
# exceeds Kubernetetes max 63"); Kubernetes allows 256 KiB for all of them.
PODMAN_MAX_ANNOTATION = 63
# podman 4.3 refuses a Downward API fieldRef to the namespace (it has none): it gets a literal.
PODMAN_NO_FIELDREF = "metadata.namespace"


def load_text(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load(path: Path) -> list[Doc]:
    return load_text(path.read_text())


class _NoAliases(yaml.SafeDumper):
    """Write every value out in full: the source's anchors are shared objects after loading."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(docs: Iterable[Doc]) -> str:
    return yaml.dump_all(list(docs), Dumper=_NoAliases, sort_keys=False, default_flow_style=False)


def pod_spec(doc: Doc) -> Doc | None:
    """The Pod spec of a Pod (other kinds are passed through untouched)."""
    return doc["spec"] if doc.get("kind") == "Pod" else None


def all_containers(spec: Mapping[str, Any]) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def classic(doc: Doc) -> Doc:
    """Native sidecars become regular containers, placed before the app containers, each with
    a preStop that waits for nginx to exit (native sidecars are stopped after the app; regular
    containers all at once)."""
    doc = copy.deepcopy(doc)
    spec = pod_spec(doc)
    if spec is None:
        return doc
    inits, sidecars = [], []
    for container in spec.get("initContainers", []):
        if container.get("restartPolicy") == "Always":
            container = {k: v for k, v in container.items() if k != "restartPolicy"}
            lifecycle = container.setdefault("lifecycle", {})
            lifecycle.setdefault("preStop", copy.deepcopy(PRESTOP_WAIT_FOR_NGINX))
            sidecars.append(container)
        else:
            inits.append(container)
    if inits:
        spec["initContainers"] = inits
    else:
        spec.pop("initContainers", None)
    spec["containers"] = [*sidecars, *spec.get("containers", [])]
    return doc


def _namespace_literal(container: Doc, namespace: str) -> None:
    for item in container.get("env", []):
        field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field == PODMAN_NO_FIELDREF:
            del item["valueFrom"]
            item["value"] = namespace


def _pod_local_volumes(spec: Doc, pod: str) -> None:
    """Prefix emptyDir names with the Pod's: podman turns an emptyDir into a named volume, and
    two Pods with a volume `site` would otherwise share it."""
    renamed = {}
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{pod}-{volume['name']}"
    for container in all_containers(spec):
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])


def _drop_secret_volumes(spec: Doc) -> None:
    """podman kube play 4.3 plays hostPath, emptyDir and persistentVolumeClaim volumes only.
    A `secret` volume goes, with its mounts: the manifest marks it optional, so this is the Pod
    a cluster runs when the Secret does not exist."""
    dropped = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
    if not dropped:
        return
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in dropped]
    for container in all_containers(spec):
        if "volumeMounts" in container:
            container["volumeMounts"] = [
                m for m in container["volumeMounts"] if m["name"] not in dropped
            ]


def _set_env(container: Doc, overrides: Mapping[str, str]) -> set[str]:
    """Give the container's env vars named in ``overrides`` those values; return the names set."""
    done = set()
    for item in container.get("env", []):
        if item["name"] in overrides:
            item.pop("valueFrom", None)
            item["value"] = overrides[item["name"]]
            done.add(item["name"])
    return done


def override(doc: Doc, *, name: str | None = None, env: Mapping[str, str] | None = None) -> Doc:
    """A copy of a Pod renamed and/or with new values for env vars its containers declare."""
    doc = copy.deepcopy(doc)
    spec = pod_spec(doc)
    if spec is None:
        return doc
    if name:
        doc.setdefault("metadata", {})["name"] = name
    for container in all_containers(spec):
        _set_env(container, env or {})
    return doc


def podman(
    doc: Doc,
    *,
    name: str | None = None,
    host_ports: Mapping[int, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> Doc | None:
    """The podman kube play form of one document; None for kinds podman should not see."""
    if doc.get("kind") == "Service":
        return None  # pods reach each other by pod IP or hostPort under podman
    doc = classic(override(doc, name=name, env=env))
    spec = pod_spec(doc)
    if spec is None:
        return doc
    meta = doc.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {})
    for key in [k for k, v in annotations.items() if len(str(v)) > PODMAN_MAX_ANNOTATION]:
        del annotations[key]  # e.g. sidecars inject's marker: nothing podman acts on
    annotations[PODMAN_KEEP_INIT] = "always"
    spec["restartPolicy"] = "Never"
    _drop_secret_volumes(spec)
    _pod_local_volumes(spec, meta["name"])
    for container in all_containers(spec):
        container["imagePullPolicy"] = "Never"
        _namespace_literal(container, meta.get("namespace", "default"))
        for port in container.get("ports", []):
            if host_ports and port["containerPort"] in host_ports:
                port["hostPort"] = host_ports[port["containerPort"]]
    return doc


def podman_all(
    docs: Sequence[Doc], *, env: Mapping[str, str] | None = None, **options: Any
) -> list[Doc]:
    """podman() of every document; an ``env`` name no container declares is an error."""
    out = [done for doc in docs if (done := podman(doc, env=env, **options)) is not None]
    declared = {
        item["name"]
        for doc in out
        if (spec := pod_spec(doc)) is not None
        for container in all_containers(spec)
        for item in container.get("env", [])
    }
    unknown = sorted(set(env or {}) - declared)
    if unknown:
        raise ValueError(f"--env {', '.join(unknown)}: no container of the manifest declares it")
    return out


TEMPLATE_HEADER = """\
# GENERATED from k8s/pod.yaml: what `sidecars inject` adds to a workload (everything in pod.yaml
# but the app container and the volumes only it mounts). Do not edit; regenerate with
#   python3 k8s/variants.py template k8s/pod.yaml > sidecars/inject/template.yaml
"""
REPO = Path(__file__).resolve().parents[1]
# The app container of pod.yaml; everything else in its Pod is sidecar wiring.
TEMPLATE_APP = "nginx"


def template_text(text: str, app: str = TEMPLATE_APP) -> str:
    """The injector's template from pod.yaml's text, comments kept (ruamel round-trip).

    ``parts`` maps each part (the image name: .../<part>:<version>) to its containers and the
    volumes they mount; ``app.volumeMounts`` are the app's mounts of those volumes; ``pod`` holds
    the pod-level fields; ``annotations`` the Pod's own annotations."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise ValueError("the template needs ruamel.yaml (pip install -e .)") from None

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    (pod,) = (doc for doc in rt.load_all(text) if doc and doc.get("kind") == "Pod")
    spec = pod["spec"]
    (app_container,) = (c for c in spec["containers"] if c["name"] == app)
    sidecars = [
        *spec.get("initContainers", []),
        *(c for c in spec["containers"] if c is not app_container),
    ]
    used = {m["name"] for c in sidecars for m in c.get("volumeMounts", [])}
    parts: dict[str, dict[str, list[str]]] = {}
    for container in sidecars:
        part = container["image"].rsplit("/", 1)[-1].split(":", 1)[0]
        entry = parts.setdefault(part, {"containers": [], "volumes": []})
        entry["containers"].append(container["name"])
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in entry["volumes"]:
                entry["volumes"].append(mount["name"])
    seen: set[int] = set()
    out = {
        "parts": parts,
        "pod": {k: copy.deepcopy(v) for k, v in spec.items() if k not in _POD_LISTS},
        "annotations": copy.deepcopy(dict(pod["metadata"].get("annotations") or {})),
        "app": {
            "volumeMounts": [
                copy.deepcopy(m) for m in app_container.get("volumeMounts", []) if m["name"] in used
            ]
        },
        "initContainers": [_moved(c, seen) for c in spec.get("initContainers", [])],
        "containers": [_moved(c, seen) for c in spec["containers"] if c is not app_container],
        "volumes": [copy.deepcopy(v) for v in spec.get("volumes", []) if v["name"] in used],
    }
    buf = io.StringIO()
    rt.dump(out, buf)
    return TEMPLATE_HEADER + buf.getvalue()


_POD_LISTS = ("initContainers", "containers", "volumes")


def _moved(container: Any, seen: set[int]) -> Any:
    """A copy whose comments sit where the template's indentation puts the container. A value
    shared through a YAML alias (``env: *fetcher-env``) loses, at its second use, the comment
    lines after its end: they introduce the anchor owner's next key, not this container's."""
    if str(REPO) not in sys.path:  # run as a script: the package beside k8s/
        sys.path.insert(0, str(REPO))
    from sidecars.inject.template import ITEM_COLUMN, shift_comments

    copied = copy.deepcopy(container)
    for key, value in container.items():
        if id(value) in seen:
            _drop_trailing_comments(copied[key])
        seen.add(id(value))
    shift_comments(copied, ITEM_COLUMN - container.lc.col)
    return copied


def _drop_trailing_comments(node: Any) -> None:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    while isinstance(node, CommentedMap | CommentedSeq) and len(node):
        last = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        entry = node.ca.items.get(last)
        if entry:
            node.ca.items[last] = [
                None if t is not None and getattr(t, "value", "").startswith("\n") else t
                for t in entry
            ]
        node = node[last]


def _pair(raw: str, sep: str) -> tuple[str, str]:
    key, found, value = raw.partition(sep)
    if not found or not key:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected KEY{sep}VALUE")
    return key, value


def _port_pair(raw: str) -> tuple[int, int]:
    container, host = _pair(raw, "=")
    try:
        return int(container), int(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected CONTAINER_PORT=HOST_PORT") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="variant", required=True)
    sub.add_parser("classic", help="native sidecars as regular containers").add_argument(
        "manifest", type=Path
    )
    sub.add_parser("template", help="what sidecars inject adds").add_argument("manifest", type=Path)
    pod = sub.add_parser("podman", help="the form podman kube play runs")
    pod.add_argument("manifest", type=Path)
    pod.add_argument("--name", help="rename the Pod")
    pod.add_argument("--host-port", action="append", type=_port_pair, default=[])
    pod.add_argument("--env", action="append", type=lambda raw: _pair(raw, "="), default=[])
    args = parser.parse_args(argv)
    if args.variant == "template":
        try:
            sys.stdout.write(template_text(args.manifest.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            print(f"variants: cannot make a template of {args.manifest}: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        docs = load(args.manifest)
    except (OSError, yaml.YAMLError) as exc:
        print(f"variants: cannot read {args.manifest}: {exc}", file=sys.stderr)
        return 2
    if args.variant == "classic":
        sys.stdout.write(CLASSIC_HEADER + dump(classic(doc) for doc in docs))
        return 0
    try:
        out = podman_all(docs, name=args.name, host_ports=dict(args.host_port), env=dict(args.env))
    except ValueError as exc:
        print(f"variants: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dump(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
