"""The whole stream: every document in order, workloads injected, the rest byte for byte, a
ConfigMap (nginx's conf.d addition) emitted before each injected workload, and one report line
per document (linkerd-style: injected, or skipped with the reason)."""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from typing import Any

from sidecars.inject import nginx_conf, workloads
from sidecars.inject.documents import Document, dump, indent_of, split
from sidecars.inject.errors import InjectError
from sidecars.inject.template import Template
from sidecars.inject.wiring import CHECKOV, Options, inject, skip_of

CONFIG_MAP_MARKER = "sidecars.inject/config-for"
CONFIG_MAP_SUFFIX = "-sidecars-nginx"
NAMESPACE_CHECK = "CKV_K8S_21"  # checkov: no namespace set


@dataclasses.dataclass
class Output:
    text: str
    report: list[str]


def _is_generated(doc: Any) -> bool:
    meta = doc.get("metadata") if doc.get("kind") == "ConfigMap" else None
    annotations = meta.get("annotations") if isinstance(meta, MutableMapping) else None
    return isinstance(annotations, MutableMapping) and CONFIG_MAP_MARKER in annotations


def _check_object(doc: Any) -> None:
    if not isinstance(doc, MutableMapping):
        raise InjectError(f"not a Kubernetes object: a {type(doc).__name__}, not a mapping")
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InjectError(f"not a Kubernetes object: no {key}")
    kind = doc["kind"]
    if kind in workloads.WORKLOADS and doc["apiVersion"] != workloads.WORKLOADS[kind][0]:
        raise InjectError(
            f"unknown kind {doc['apiVersion']} {kind} (sidecars inject knows "
            f"{workloads.WORKLOADS[kind][0]} {kind})"
        )


def _end_marker(dumped: str, *, like: str) -> str:
    """The document end marker (``...``) its original closed with; the dump writes none."""
    lines = [x.strip() for x in like.splitlines()]
    last = next((x for x in reversed(lines) if x and not x.startswith("#")), "")
    return dumped + "...\n" if last == "..." and not dumped.endswith("...\n") else dumped


def _line_ends(dumped: str, *, like: str) -> str:
    """A changed document in its original's line ends: CRLF stays CRLF (the dump writes LF,
    and keeps the CR of a comment it carries over)."""
    if "\r\n" not in like:
        return dumped
    return dumped.replace("\r\n", "\n").replace("\n", "\r\n")


def _line(node: Any, first: int) -> int:
    """The input line of ``node``, in a document whose text starts at line ``first``."""
    lc = getattr(node, "lc", None)
    return first if lc is None or lc.line is None else first + lc.line


def _key(doc: Any) -> tuple[str | None, str | None]:
    """A namespaced object's (namespace, name); None for a namespace kubectl -n decides."""
    meta = doc.get("metadata")
    if not isinstance(meta, MutableMapping):
        return None, None
    namespace, name = meta.get("namespace"), meta.get("name")
    return (namespace if isinstance(namespace, str) else None), (
        name if isinstance(name, str) else None
    )


def _users_config_maps(docs: list[Document]) -> set[tuple[str | None, str | None]]:
    found = set()
    for doc in docs:
        if not isinstance(doc.data, MutableMapping):
            continue
        items = doc.data.get("items") if doc.data.get("kind") == "List" else [doc.data]
        for item in items if isinstance(items, list) else []:
            is_cm = isinstance(item, MutableMapping) and item.get("kind") == "ConfigMap"
            if is_cm and not _is_generated(item):
                found.add(_key(item))
    return found


class _Run:
    def __init__(
        self, tpl: Template, opts: Options, users: set[tuple[str | None, str | None]]
    ) -> None:
        self.tpl, self.opts = tpl, opts
        self.report: list[str] = []
        self.users = users  # the input's own ConfigMaps: ours must not take their names
        # ours -> the workload it was emitted for, and where that is
        self.emitted: dict[tuple[str | None, str | None], tuple[str, str]] = {}

    def config_map(self, doc: Any) -> Any:
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise InjectError(f"{doc['kind']} has no metadata.name")
        fetcher = "config-fetcher" in self.opts.parts
        port = self.tpl.stub_status_port(self.opts.env.get("metrics-proxy", {}))
        text = nginx_conf.conf(
            self.opts.parts,
            stub_status_port=port,
            site_dir=self.tpl.env_value("config-fetcher", "CONFIG_FETCHER_DEST")
            if fetcher
            else None,
        )
        annotations = {CONFIG_MAP_MARKER: f"{doc['kind']}/{name}"}
        namespace = meta.get("namespace")
        no_namespace = skip_of(self.tpl, NAMESPACE_CHECK)
        if namespace is None and no_namespace is not None:  # in its workload's, as kubectl -n sets
            annotations[CHECKOV + "1"] = no_namespace
        return nginx_conf.config_map(name + CONFIG_MAP_SUFFIX, namespace, annotations, text)

    def workload(self, doc: Any, where: str, text: str, base: int = 0) -> tuple[bool, Any]:
        """Inject one workload in place; return whether it was, and the ConfigMap to emit
        before it: None if its ConfigMap was emitted before (for a workload of the same name in
        the same namespace, so with the same content). ``text`` is its document's, ``base`` the
        column of its keys there (for our comments' columns)."""
        kind = doc["kind"]
        holder = workloads.pod_template(doc)
        label = f"{where}: {workloads.describe(doc)}"
        if holder is None:
            self.report.append(f"{label}: skipped (no Pod template)")
            return False, None
        if not self.opts.native:
            spec = holder["spec"]
            if kind in workloads.RUN_TO_COMPLETION or (
                kind == "Pod" and spec.get("restartPolicy") in ("Never", "OnFailure")
            ):
                raise InjectError(
                    f"{workloads.describe(doc)}: classic sidecars (Kubernetes before 1.29) never "
                    "exit, so its Pods would never complete; use --kube-version 1.29 or later"
                )
        cm = self.config_map(doc)
        key, owner = _key(cm), workloads.describe(doc)
        if key in self.users:
            raise InjectError(
                f"ConfigMap/{key[1]} is in the input already, but sidecars inject emits its own "
                f"of that name for {owner}; rename yours"
            )
        sequence, _ = indent_of(text)
        spec_column = base + 2 * (len(workloads.WORKLOADS[kind][1]) + 1)
        result = inject(
            holder,
            self.tpl,
            self.opts,
            cm["metadata"]["name"],
            column=spec_column + sequence,
            top=doc,
        )
        if result.record is None:
            self.report.append(f"{label}: skipped ({result.reason})")
            return False, None
        mode = "native" if self.opts.native else "classic"
        again = ", replacing an earlier injection" if result.was_injected else ""
        first, first_where = self.emitted.setdefault(key, (owner, where))
        emit = first_where == where
        where_cm = "before it" if emit else f"emitted before {first}"
        line = (
            f"{label}: injected {', '.join(result.record['parts'])} ({mode} sidecars{again}), "
            f"with ConfigMap/{cm['metadata']['name']} {where_cm}"
        )
        self.report.append(line + "".join(f"; warning: {w}" for w in result.warnings))
        return True, cm if emit else None

    def document(self, doc: Document) -> str:
        data = doc.data
        _check_object(data)
        where = f"document {doc.number}"
        kind = data["kind"]
        if _is_generated(data):
            self.report.append(f"{where}: {workloads.describe(data)}: removed (regenerated)")
            return doc.prefix
        if kind == "List":
            return self.list_(doc)
        if kind not in workloads.WORKLOADS:
            self.report.append(f"{where}: {workloads.describe(data)}: skipped (not a workload)")
            return doc.prefix + doc.text
        injected, cm = self.workload(data, where, doc.text)
        if not injected:
            return doc.prefix + doc.text
        before = "" if cm is None else dump(cm, like=doc.text)
        dumped = _end_marker(before + dump(data, like=doc.text), like=doc.text)
        return doc.prefix + _line_ends(dumped, like=doc.text)

    def list_(self, doc: Document) -> str:
        items = doc.data.get("items")
        if not isinstance(items, list):
            raise InjectError("List has no items list")
        changed = False
        i = number = 0  # index now, number in the input
        while i < len(items):
            number += 1
            item, where = items[i], f"document {doc.number}, item {number}"
            try:
                _check_object(item)
            except InjectError as exc:
                raise InjectError(f"item {number}: {exc.message}") from None
            if _is_generated(item):
                self.report.append(f"{where}: {workloads.describe(item)}: removed (regenerated)")
                del items[i]
                changed = True
                continue
            if item["kind"] not in workloads.WORKLOADS:
                self.report.append(f"{where}: {workloads.describe(item)}: skipped (not a workload)")
                i += 1
                continue
            try:
                injected, cm = self.workload(item, where, doc.text, base=indent_of(doc.text)[0])
            except InjectError as exc:
                raise exc.located(doc.number, _line(item, doc.line), doc.line) from None
            changed = changed or injected
            if cm is not None:
                items.insert(i, cm)
                i += 1
            i += 1
        if not changed:
            return doc.prefix + doc.text
        dumped = _end_marker(dump(doc.data, like=doc.text, explicit=doc.explicit), like=doc.text)
        return doc.prefix + _line_ends(dumped, like=doc.text)


def run(text: str, tpl: Template, opts: Options) -> Output:
    """Render the whole output before anything is written: an error leaves stdout empty."""
    try:
        return _run(text, tpl, opts)
    except RecursionError:  # the composer and emitter recurse per nesting level
        raise InjectError("broken YAML: nested too deeply") from None


def _run(text: str, tpl: Template, opts: Options) -> Output:
    docs = split(text)
    run_ = _Run(tpl, opts, _users_config_maps(docs))
    pieces = []
    for doc in docs:
        if doc.data is None:
            pieces.append(doc.prefix + doc.text)
            continue
        try:
            piece = run_.document(doc)
        except InjectError as exc:
            raise exc.located(doc.number, doc.line, doc.line) from None
        if pieces and pieces[-1] and not pieces[-1].endswith("\n"):
            pieces[-1] += "\r\n" if "\r\n" in pieces[-1] else "\n"
        pieces.append(piece)
    return Output("".join(pieces), run_.report)
