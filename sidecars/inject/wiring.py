"""Adding the parts to one Pod template, and removing exactly what an earlier run added.

What was added is recorded in the marker annotation (JSON: version, parts, mode, the names of
the containers and volumes, the app's mounts, the pod fields and annotations that were set), so
re-injection first undoes it and injecting twice equals injecting once. Pure functions over the
round-trip YAML objects: the user's comments, order and quoting survive.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import MutableMapping
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from sidecars import docs
from sidecars.inject import nginx_conf, workloads
from sidecars.inject.documents import dump, load_one
from sidecars.inject.errors import InjectError
from sidecars.inject.template import ITEM_COLUMN, Template, shift_comments
from sidecars.runtime.settings import options

MARKER = "sidecars.inject/status"
# The app's business, never set by the injector: service links and the service-account token
# change what the app sees (the parts need neither), and its user is its image's choice (the
# parts carry their own runAsUser/runAsNonRoot).
APP_OWNED = {"enableServiceLinks", "automountServiceAccountToken"}
APP_OWNED_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot"}
PROMETHEUS = "prometheus.io/"
# checkov reads its skips from the annotations of the object it scans (a Deployment's own, not
# its Pod template's), so ours go there.
CHECKOV = "checkov.io/skip"
# The template's skips about the Pod as a whole (its namespace, a NetworkPolicy selecting it):
# the user's to decide for their workload, never waived for them. The rest are about the
# containers injection adds.
POD_WIDE_CHECKS = {"CKV_K8S_21", "CKV2_K8S_6"}
ROTATE = "LOG_SHIPPER_ROTATE_BYTES"
# Volume types a conf.d mount may have for our file to be added as one more source.
PROJECTABLE = ("configMap", "projected")
# What injection may create (and removal then deletes once empty).
CREATED = (
    "initContainers",
    "volumes",
    "app.volumeMounts",
    "securityContext",
    "metadata",
    "annotations",
    "workload.annotations",
)


@dataclasses.dataclass(frozen=True)
class Options:
    parts: list[str]
    native: bool = True
    reload: str = "signal"  # or "webhook"
    env: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    image_prefix: str | None = None
    app_container: str | None = None
    version: str = "0"


@dataclasses.dataclass
class Result:
    record: dict[str, Any] | None  # None: skipped
    reason: str = ""  # why skipped, or notes on what was injected
    was_injected: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)


def _map(node: MutableMapping[str, Any], key: str, created: list[str], tag: str) -> Any:
    if not isinstance(node.get(key), MutableMapping):
        if key in node and node[key] is not None:
            raise InjectError(f"{tag} is not a mapping")
        node[key] = CommentedMap()
        created.append(tag)
    return node[key]


def _seq(node: MutableMapping[str, Any], key: str, created: list[str], tag: str) -> Any:
    if not isinstance(node.get(key), list):
        if key in node and node[key] is not None:
            raise InjectError(f"{tag} is not a list")
        node[key] = CommentedSeq()
        created.append(tag)
    return node[key]


def find_app(spec: Any, name: str | None) -> tuple[Any | None, str]:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, MutableMapping)]
    if name is not None:
        found = [c for c in containers if c.get("name") == name]
        return (found[0], "") if found else (None, f"no container named {name!r}")
    nginx = [c for c in containers if workloads.is_nginx_image(c.get("image"))]
    if len(nginx) > 1:
        names = ", ".join(repr(c.get("name")) for c in nginx)
        raise InjectError(
            f"containers {names} all run nginx images: name one with --app-container",
            node=nginx[1],
        )
    if not nginx:
        return None, "no container runs an nginx image (name the app with --app-container)"
    return nginx[0], ""


def customise(container: Any, part: str, opts: Options) -> Any:
    """Our container as injected: image prefix, reload method, ``--env`` values."""
    flags = {opt.env: opt.flag for opt in options(docs.settings_class(part), part)}
    if opts.image_prefix is not None:
        container["image"] = opts.image_prefix + "/" + container["image"].rsplit("/", 1)[-1]
    if part == "config-fetcher" and opts.reload != "signal" and "args" in container:
        args = [a for a in container["args"] if not str(a).startswith("--reload-pidfile")]
        del container["args"][:]
        container["args"].extend(args)
    for name, value in opts.env.get(part, {}).items():
        flag = flags.get(name)
        if flag and "args" in container:  # the flag would win over the env var: --env wins
            args, skip = [], False
            for arg in container["args"]:
                if skip:
                    skip = False
                elif str(arg) == flag:
                    skip = True
                elif not str(arg).startswith(flag + "="):
                    args.append(arg)
            del container["args"][:]
            container["args"].extend(args)
        env = container.setdefault("env", CommentedSeq())
        for item in env:
            if item.get("name") == name:
                item.pop("valueFrom", None)
                item["value"] = value
                break
        else:
            item = CommentedMap(name=name, value=value)
            trailing = _pop_trailing_comment(env)
            env.append(item)
            if trailing is not None:  # it introduces what follows the list: keep it last
                item.ca.items["value"] = [None, None, trailing, None]
    return container


def _pop_trailing_comment(node: Any) -> Any:
    """Detach the full-line comment after a node's last line (ruamel keeps it on the deepest
    last value) and return it."""
    while isinstance(node, CommentedMap | CommentedSeq) and len(node):
        last = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        entry = node.ca.items.get(last)
        if entry:
            for i, token in enumerate(entry):
                if token is not None and getattr(token, "value", "").startswith("\n"):
                    entry[i] = None
                    return token
        node = node[last]
    return None


def _our_config_map(name: str) -> CommentedMap:
    return CommentedMap(
        name=name, items=[CommentedMap(key=nginx_conf.CONF_KEY, path=nginx_conf.CONF_KEY)]
    )


def _confd_volume(spec: Any, app: Any) -> Any | None:
    """The app's ConfigMap or projected volume mounted at conf.d itself (a Helm chart's usual
    way to ship server blocks), into which our file is projected; None if there is none."""
    for mount in app.get("volumeMounts") or []:
        if not isinstance(mount, MutableMapping) or mount.get("subPath"):
            continue
        if str(mount.get("mountPath", "")).rstrip("/") != nginx_conf.CONF_DIR:
            continue
        for volume in spec.get("volumes") or []:
            named = isinstance(volume, MutableMapping) and volume.get("name") == mount.get("name")
            if named and any(isinstance(volume.get(k), MutableMapping) for k in PROJECTABLE):
                return volume
    return None


def _project_into(volume: Any, config_map: str) -> dict[str, str]:
    """Add our file to the user's conf.d volume; return what undoes it (for the record)."""
    ours = CommentedMap(configMap=_our_config_map(config_map))
    if "projected" in volume:
        volume["projected"].setdefault("sources", CommentedSeq()).append(ours)
        return {"volume": volume["name"], "source": config_map}
    was = dump(volume, explicit=False)  # as written: its comments, `defaultMode: 0644`
    theirs = volume.pop("configMap")
    source = CommentedMap((k, v) for k, v in theirs.items() if k != "defaultMode")
    projected = CommentedMap(sources=CommentedSeq([CommentedMap(configMap=source), ours]))
    if "defaultMode" in theirs:
        projected["defaultMode"] = theirs["defaultMode"]
    volume["projected"] = projected
    return {"volume": volume["name"], "was": was}


def _unproject(spec: Any, confd: Any) -> None:
    if not confd:
        return
    volumes = spec.get("volumes") or []
    for i, volume in enumerate(volumes):
        if not isinstance(volume, MutableMapping) or volume.get("name") != confd["volume"]:
            continue
        if "was" in confd:
            volumes[i] = load_one(confd["was"])
        else:
            sources = (volume.get("projected") or {}).get("sources") or []
            for j in reversed(range(len(sources))):
                cm = sources[j].get("configMap") if isinstance(sources[j], MutableMapping) else None
                if isinstance(cm, MutableMapping) and cm.get("name") == confd["source"]:
                    del sources[j]


def _names(items: Any) -> set[str]:
    return {i.get("name") for i in items or [] if isinstance(i, MutableMapping)}


def inject(
    holder: Any,
    tpl: Template,
    opts: Options,
    config_map: str,
    *,
    column: int = ITEM_COLUMN,
    top: Any = None,
) -> Result:
    """Wire the parts into ``holder`` (the Pod template: its ``metadata`` and ``spec``) of the
    workload ``top`` (default: the holder itself, a Pod). ``column``: where a container's keys
    will be in the output, for our comments."""
    top = holder if top is None else top
    before = _ours_now(holder, tpl)
    was = uninject(holder, tpl, top)
    spec = holder["spec"]
    app, reason = find_app(spec, opts.app_container)
    if app is None:
        if was is not None:  # it was injected: skipping now would leave half our wiring
            raise InjectError(f"injected before, but now {reason}")
        return Result(None, reason)
    parts = [p for p in tpl.part_order if p in opts.parts]
    inits, regular = [], []
    for c in tpl.init_containers(parts):
        c = customise(c, tpl.part_of(c["name"]), opts)
        if opts.native or c.get("restartPolicy") != "Always":
            inits.append(c)
        else:  # classic: the native sidecar becomes a regular container
            del c["restartPolicy"]
            regular.append(c)
    regular += [customise(c, tpl.part_of(c["name"]), opts) for c in tpl.containers(parts)]
    for c in [*inits, *regular]:
        shift_comments(c, column - ITEM_COLUMN)

    theirs = {
        c.get("name"): c
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if isinstance(c, MutableMapping)
    }
    for c in [*inits, *regular]:
        if c["name"] in theirs:
            raise InjectError(
                f"container {c['name']!r} already exists: sidecars inject adds its own; "
                "rename yours",
                node=theirs[c["name"]],
            )
    _check_ports(spec, [*inits, *regular], tpl, opts)
    signals = _signals_nginx(parts, opts, tpl)
    if signals and spec.get("shareProcessNamespace") is False:
        raise InjectError(_no_shared_pids(parts, opts, tpl), node=spec, key="shareProcessNamespace")
    confd = _confd_volume(spec, app)
    volumes = tpl.volumes(parts)
    if confd is None:
        volumes.append(CommentedMap(name=nginx_conf.VOLUME, configMap=_our_config_map(config_map)))
    their_volumes = {
        v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, MutableMapping)
    }
    for v in volumes:
        if v["name"] in their_volumes:
            raise InjectError(
                f"volume {v['name']!r} already exists: sidecars inject adds its own; rename yours",
                node=their_volumes[v["name"]],
            )
    mounts = tpl.app_mounts(parts)
    for m in mounts:
        if m["name"] == nginx_conf.LOGS_VOLUME:
            m["mountPath"] = nginx_conf.LOGS_IN_APP
    if confd is None:
        mounts.append(
            CommentedMap(
                name=nginx_conf.VOLUME,
                mountPath=f"{nginx_conf.CONF_DIR}/{nginx_conf.CONF_KEY}",
                subPath=nginx_conf.CONF_KEY,
                readOnly=True,
            )
        )
    app_mounts = {
        m.get("mountPath"): m
        for m in app.get("volumeMounts") or []
        if isinstance(m, MutableMapping)
    }
    app_paths = set(app_mounts)
    for path in app_paths:
        if (
            confd is None
            and isinstance(path, str)
            and path.rstrip("/")
            in (
                "/etc/nginx/conf.d",
                "/etc/nginx",
                "/etc",
            )
        ):
            # Not a ConfigMap/projected volume over conf.d itself (that one gets our file as
            # one more source): the runtime cannot create our file's mount point inside it.
            raise InjectError(
                f"container {app.get('name')!r} mounts a volume at {path}: sidecars inject "
                f"cannot add {nginx_conf.CONF_DIR}/{nginx_conf.CONF_KEY} inside it; mount a "
                f"ConfigMap or projected volume at {nginx_conf.CONF_DIR}, or your files one by "
                "one (subPath)",
                node=app_mounts[path],
            )
    for m in mounts:
        if m["mountPath"] in app_paths:
            raise InjectError(
                f"container {app.get('name')!r} already mounts {m['mountPath']}, where sidecars "
                f"inject mounts its {m['name']!r} volume",
                node=app_mounts[m["mountPath"]],
            )

    created: list[str] = []
    record: dict[str, Any] = {
        "version": opts.version,
        "parts": parts,
        "mode": "native" if opts.native else "classic",
        "reload": opts.reload,
        "app": app["name"],
        "initContainers": [c["name"] for c in inits],
        "containers": [c["name"] for c in regular],
        "volumes": [v["name"] for v in volumes],
        "appMounts": [m["mountPath"] for m in mounts],
    }
    if inits:
        seq = _seq(spec, "initContainers", created, "initContainers")
        for i, c in enumerate(inits):  # first: the site is published before any other init runs
            seq.insert(i, c)
    spec["containers"].extend(regular)
    _seq(spec, "volumes", created, "volumes").extend(volumes)
    _seq(app, "volumeMounts", created, "app.volumeMounts").extend(mounts)

    pod_set, security_set = [], []
    for key, value in tpl.pod.items():
        if key in APP_OWNED:
            continue
        if key == "shareProcessNamespace" and not signals:
            continue
        if key == "securityContext":
            ours = _map(spec, key, created, "securityContext")
            for sub, sub_value in value.items():
                if sub not in APP_OWNED_SECURITY and sub not in ours:
                    ours[sub] = copy.deepcopy(sub_value)
                    security_set.append(sub)
        elif key not in spec:
            spec[key] = copy.deepcopy(value)
            pod_set.append(key)
    record["pod"], record["securityContext"] = pod_set, security_set

    meta = _map(holder, "metadata", created, "metadata")
    annotations = _map(meta, "annotations", created, "annotations")
    wanted = _annotations(tpl, parts)
    set_annotations = []
    for key, value in wanted.items():
        if key not in annotations:
            annotations[key] = value
            set_annotations.append(key)
    record["annotations"] = set_annotations
    if top is holder:
        top_annotations = annotations
    else:
        top_meta = _map(top, "metadata", [], "metadata")
        top_annotations = _map(top_meta, "annotations", created, "workload.annotations")
    record["checkov"] = _add_skips(top_annotations, skips(tpl))
    if confd is not None:
        record["confd"] = _project_into(confd, config_map)
    record["created"] = created
    annotations[MARKER] = json.dumps(record, sort_keys=True, separators=(",", ":"))

    result = Result(record, was_injected=was is not None)
    for c in [*inits, *regular]:
        if c["name"] in before and before[c["name"]] != _plain(c):
            result.warnings.append(
                f"container {c['name']!r} differed from what sidecars inject adds: replaced "
                "(give its settings with --env)"
            )
    if signals:
        result.warnings += _signal_warning(spec, app, tpl)
    return result


def skips(tpl: Template) -> dict[str, str]:
    """The template's checkov skips injection writes into a workload: key -> CHECK=reason."""
    return {
        str(k): str(v)
        for k, v in tpl.annotations.items()
        if str(k).startswith(CHECKOV) and str(v).partition("=")[0] not in POD_WIDE_CHECKS
    }


def skip_of(tpl: Template, check: str) -> str | None:
    """The template's skip value (CHECK=reason) for ``check``."""
    for key, value in tpl.annotations.items():
        if str(key).startswith(CHECKOV) and str(value).partition("=")[0] == check:
            return str(value)
    return None


def _add_skips(annotations: Any, wanted: dict[str, str]) -> list[str]:
    """Add each skip the annotations do not already have (for its check), under its template
    key or, when the user has that key, the next free ``checkov.io/skipN``."""
    present = {
        str(v).partition("=")[0].strip()
        for k, v in annotations.items()
        if str(k).startswith(CHECKOV)
    }
    added, n = [], 1
    for key, value in wanted.items():
        if value.partition("=")[0] in present:
            continue
        while key in annotations:
            key, n = f"{CHECKOV}{n}", n + 1
        annotations[key] = value
        added.append(key)
    return added


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node))


def _ours_now(holder: Any, tpl: Template) -> dict[str, Any]:
    """The containers an earlier injection added, as they are now (maybe edited since)."""
    record = record_of(holder, tpl)
    if record is None:
        return {}
    names = {*record.get("initContainers", []), *record.get("containers", [])}
    spec = holder["spec"]
    return {
        c["name"]: _plain(c)
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if isinstance(c, MutableMapping) and c.get("name") in names
    }


def _annotations(tpl: Template, parts: list[str], *, every: bool = False) -> dict[str, str]:
    """The Pod template annotations injection sets (where the user has not set them); with
    ``every``, also those an earlier version set there (the checkov skips, now the workload's)."""
    wanted = {k: v for k, v in tpl.annotations.items() if every or not str(k).startswith(CHECKOV)}
    port = tpl.first_port("metrics-proxy")
    if "metrics-proxy" in parts and port is not None:
        wanted.update(
            {
                PROMETHEUS + "scrape": "true",
                PROMETHEUS + "port": str(port),
                PROMETHEUS + "path": "/metrics",
            }
        )
    return wanted


def _check_ports(spec: Any, ours: list[Any], tpl: Template, opts: Options) -> None:
    """The Pod's containers share one network namespace: a port of the user's that one of ours
    listens on (or names, which a Service or PodMonitor would then resolve to either) is refused
    before it becomes a sidecar that cannot bind."""
    numbers: dict[int, str] = {}
    names: dict[str, str] = {}
    for c in ours:
        for port in c.get("ports") or []:
            number = int(port["containerPort"])
            numbers[number] = f"which sidecars inject's {c['name']!r} listens on"
            if port.get("name"):
                names[str(port["name"])] = c["name"]
    stub = tpl.stub_status_port(opts.env.get("metrics-proxy", {}))
    if "metrics-proxy" in opts.parts and stub is not None:
        numbers[stub] = "where sidecars inject puts nginx's stub_status (127.0.0.1)"
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not isinstance(c, MutableMapping):
            continue
        for port in c.get("ports") or []:
            if not isinstance(port, MutableMapping):
                continue
            number, name = port.get("containerPort"), port.get("name")
            if isinstance(number, int) and number in numbers:
                raise InjectError(
                    f"container {c.get('name')!r} declares port {number}, {numbers[number]}; "
                    "move yours",
                    node=port,
                )
            if isinstance(name, str) and name in names:
                raise InjectError(
                    f"container {c.get('name')!r} names a port {name!r}, as sidecars inject's "
                    f"{names[name]!r} does; rename yours",
                    node=port,
                )


def _rotates_logs(opts: Options, tpl: Template) -> bool:
    """Whether the log-shipper rotates nginx's logs (then USR1s the master to reopen them)."""
    raw = opts.env.get("log-shipper", {}).get(ROTATE, tpl.env_value("log-shipper", ROTATE))
    if raw is None:
        return False  # the setting's default: off
    settings = options(docs.settings_class("log-shipper"), "log-shipper")
    (opt,) = (o for o in settings if o.env == ROTATE)
    return bool(opt.spec.parse(raw))


def _signals_nginx(parts: list[str], opts: Options, tpl: Template) -> bool:
    """Whether a part signals the nginx master (so needs the shared PID namespace): the
    config-fetcher's SIGHUP reload, the log-shipper's USR1 after it rotates the logs."""
    rotates = "log-shipper" in parts and _rotates_logs(opts, tpl)
    return rotates or (opts.reload == "signal" and "config-fetcher" in parts)


def _no_shared_pids(parts: list[str], opts: Options, tpl: Template) -> str:
    needs, ways = [], []
    if opts.reload == "signal" and "config-fetcher" in parts:
        needs.append("the config-fetcher's reload (--reload signal)")
        ways.append("--reload webhook --env CONFIG_FETCHER_RELOAD_WEBHOOK=URL")
    if "log-shipper" in parts and _rotates_logs(opts, tpl):
        needs.append("the log-shipper's log rotation")
        ways.append(
            f"--env {ROTATE}=0 --env LOG_SHIPPER_MAX_HELD_BYTES=0 (rotate in the nginx container)"
        )
    return (
        f"the Pod sets shareProcessNamespace: false, but {' and '.join(needs)} signal nginx's "
        f"master in a shared PID namespace: use {' and '.join(ways)}, or drop the field"
    )


def _signal_warning(spec: Any, app: Any, tpl: Template) -> list[str]:
    fetcher = next(
        c for c in tpl.raw["initContainers"] if tpl.part_of(c["name"]) == "config-fetcher"
    )
    uid = fetcher.get("securityContext", {}).get("runAsUser")
    app_uid = (app.get("securityContext") or {}).get("runAsUser")
    if app_uid is None:
        app_uid = (spec.get("securityContext") or {}).get("runAsUser")
    if uid is not None and app_uid != uid:
        return [
            f"nginx does not run as UID {uid}, so the sidecars cannot signal it (reload, log "
            "reopening after rotation): set its runAsUser"
        ]
    return []


def record_of(holder: Any, tpl: Template) -> dict[str, Any] | None:
    meta = holder.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, MutableMapping) else None
    if not isinstance(annotations, MutableMapping) or MARKER not in annotations:
        return None
    try:
        record = json.loads(annotations[MARKER])
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise InjectError(
            f"annotation {MARKER} is not what sidecars inject writes: {exc}"
        ) from None
    # Re-injection deletes what the record names: it may name only what we ever add, never the
    # user's containers, volumes or fields (a hand-edited or copied annotation).
    ours = {c for p in tpl.part_order for c in tpl.containers_of(p)}
    paths = {m["mountPath"] for m in tpl.raw["app"]["volumeMounts"]} | {
        nginx_conf.LOGS_IN_APP,
        f"{nginx_conf.CONF_DIR}/{nginx_conf.CONF_KEY}",
    }
    prometheus = {PROMETHEUS + k for k in ("scrape", "port", "path")}
    for key, allowed in (
        ("initContainers", ours),
        ("containers", ours),
        ("volumes", tpl.volumes_for(tpl.part_order) | {nginx_conf.VOLUME}),
        ("appMounts", paths),
        ("pod", set(tpl.pod)),
        ("securityContext", set(tpl.pod.get("securityContext") or {})),
        ("annotations", set(tpl.annotations) | prometheus),
        ("created", set(CREATED)),
        ("checkov", None),
    ):
        names = record.get(key, [])
        if not isinstance(names, list) or not all(
            re.fullmatch(re.escape(CHECKOV) + r"\d+", str(n))
            if allowed is None
            else str(n) in allowed
            for n in names
        ):
            raise InjectError(
                f"annotation {MARKER} names {key} {names!r}, not all added by sidecars inject; "
                "remove the annotation or restore it"
            )
    confd = record.get("confd")
    if confd is not None:
        volume = confd.get("volume") if isinstance(confd, dict) else None
        names = _names(holder["spec"].get("volumes"))
        ok = isinstance(volume, str) and volume in names
        if ok and "was" in confd:
            try:
                restored = load_one(str(confd["was"]))
            except InjectError:
                restored = None
            ok = isinstance(restored, MutableMapping) and restored.get("name") == volume
        elif ok:
            ok = isinstance(confd.get("source"), str)
        if not ok:
            raise InjectError(f"annotation {MARKER} names a conf.d volume it cannot restore")
    return record


def _drop(seq: Any, names: list[str], key: str = "name") -> None:
    if isinstance(seq, list):
        for i in reversed(range(len(seq))):
            if isinstance(seq[i], MutableMapping) and seq[i].get(key) in names:
                del seq[i]


def uninject(holder: Any, tpl: Template, top: Any = None) -> dict[str, Any] | None:
    """Remove exactly what the marker annotation says was added (to ``holder``, the Pod
    template, and ``top``, its workload: default the holder, a Pod); return that record."""
    record = record_of(holder, tpl)
    if record is None:
        return None
    spec = holder["spec"]
    created = set(record.get("created", []))
    top = holder if top is None else top
    top_meta = top.get("metadata")
    theirs = top_meta.get("annotations") if isinstance(top_meta, MutableMapping) else None
    if isinstance(theirs, MutableMapping):
        ours = set(skips(tpl).values())
        for key in record.get("checkov", []):
            if theirs.get(key) in ours:  # only a skip of ours, still as we wrote it
                del theirs[key]
        if "workload.annotations" in created and not theirs and top is not holder:
            del top_meta["annotations"]
    _drop(spec.get("initContainers"), record.get("initContainers", []))
    _drop(spec.get("containers"), record.get("containers", []))
    _drop(spec.get("volumes"), record.get("volumes", []))
    _unproject(spec, record.get("confd"))
    for app in spec.get("containers") or []:
        if isinstance(app, MutableMapping) and app.get("name") == record.get("app"):
            _drop(app.get("volumeMounts"), record.get("appMounts", []), key="mountPath")
            if "app.volumeMounts" in created and not app.get("volumeMounts"):
                app.pop("volumeMounts", None)
    # A field we set that the user has changed since is theirs now: kept, and not set again.
    for key in record.get("pod", []):
        if key in spec and spec[key] == tpl.pod.get(key):
            del spec[key]
    security = spec.get("securityContext")
    ours = tpl.pod.get("securityContext") or {}
    if isinstance(security, MutableMapping):
        for key in record.get("securityContext", []):
            if key in security and security[key] == ours.get(key):
                del security[key]
    for key in ("initContainers", "volumes", "securityContext"):
        if key in created and not spec.get(key):
            spec.pop(key, None)
    meta = holder["metadata"]
    annotations = meta["annotations"]
    set_before = _annotations(tpl, tpl.part_order, every=True)
    for key in record.get("annotations", []):
        if key in annotations and annotations[key] == set_before.get(key):
            del annotations[key]
    annotations.pop(MARKER, None)
    if "annotations" in created and not annotations:
        del meta["annotations"]
    if "metadata" in created and not meta:
        del holder["metadata"]
    return record
