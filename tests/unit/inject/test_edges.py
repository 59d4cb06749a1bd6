"""The issue's promises at their edges, each a case the golden corpus does not reach:

- CRLF input: the documents it changes come back in CRLF too, not a mix of line endings
- a metrics exporter image (nginx/nginx-prometheus-exporter) beside nginx is not "an nginx"
- the app found through a registry port and a digest (reg:5000/nginx@sha256:...)
- a Pod that sets `shareProcessNamespace: false` while a part must signal nginx: exit 2, not a
  Pod whose reloads and log reopening silently fail
- a port of the user's (number or name) that one of ours takes, the stub_status port included
- two workloads whose ConfigMaps would share a name, and a ConfigMap of the user's by that name
- an --image-prefix that makes no valid image name (empty, a tag in it, upper case)
- each --parts subset with the config-fetcher: nginx writes the error log the fetcher finds
  nginx's master by (the official image keeps its pid file to itself)
- a pod field we set and the user then changed is theirs: re-injection keeps it
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from sidecars.inject import nginx_conf, template
from sidecars.inject.wiring import MARKER
from tests.unit.inject.test_golden import CORPUS, NATIVE, inject, validate

DEPLOYMENT = (CORPUS / "classic.yaml").read_text()


def deployment(containers: str = "", spec: str = "", name: str = "web", kind: str = "Deployment"):
    """The corpus's plain Deployment, with extra containers and pod spec fields (YAML at the
    containers list's / pod spec's indentation)."""
    text = DEPLOYMENT.replace("kind: Deployment", f"kind: {kind}").replace(
        "  name: web\n", f"  name: {name}\n", 1
    )
    text = text.replace(
        "    spec:\n      containers:\n", "    spec:\n" + spec + "      containers:\n"
    )
    return text + containers


def pod_spec(out: str, kind: str = "Deployment") -> dict:
    (doc,) = (d for d in yaml.safe_load_all(out) if d["kind"] == kind)
    return doc["spec"]["template"]


def refused(text: str, *args: str) -> str:
    code, out, err = inject(text, list(args))
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1, err
    return err


def test_crlf_input_comes_back_in_crlf() -> None:
    service = "apiVersion: v1\r\nkind: Service\r\nmetadata:\r\n  name: web  # ours\r\n"
    text = service + "---\r\n" + DEPLOYMENT.replace("\n", "\r\n")
    code, out, err = inject(text, [])
    assert code == 0, err
    assert out.startswith(service + "---\r\n")
    assert "\n" not in out.replace("\r\n", ""), "a bare LF in CRLF output"
    assert "\r\r" not in out
    validate(out, NATIVE[-1:])
    code, again, err = inject(out, [])
    assert (code, again) == (0, out), err


def test_an_exporter_beside_nginx_is_not_the_app() -> None:
    exporter = "        - name: exporter\n          image: nginx/nginx-prometheus-exporter:1.1\n"
    code, out, err = inject(deployment(exporter), [])
    assert code == 0, err
    record = json.loads(pod_spec(out)["metadata"]["annotations"][MARKER])
    assert record["app"] == "nginx"


@pytest.mark.parametrize(
    "image",
    [
        "reg:5000/nginx@sha256:" + "0" * 64,
        "reg.example:5000/team/nginx:1.27@sha256:" + "a" * 64,
        "nginxinc/nginx-unprivileged:1.27-alpine",
    ],
)
def test_the_app_found_through_registry_port_and_digest(image: str) -> None:
    code, _, err = inject(DEPLOYMENT.replace("image: nginx:1.27", f"image: {image}"), [])
    assert code == 0 and "injected config-fetcher" in err, err


@pytest.mark.parametrize("version", ["1.29", "1.25"])
def test_share_process_namespace_false_with_a_signalling_part_is_refused(version: str) -> None:
    text = deployment(spec="      shareProcessNamespace: false\n")
    err = refused(text, "--kube-version", version)
    assert "shareProcessNamespace: false" in err and "--reload webhook" in err, err
    assert "LOG_SHIPPER_ROTATE_BYTES=0" in err, err


# Reloads by webhook, no rotation, no retention: no part signals nginx.
NOTHING_SIGNALS = [
    "--reload",
    "webhook",
    "--env",
    "CONFIG_FETCHER_RELOAD_WEBHOOK=http://127.0.0.1:9000/-/reload",
    "--env",
    "LOG_SHIPPER_ROTATE_BYTES=0",
    "--env",
    "LOG_SHIPPER_MAX_HELD_BYTES=0",
]


def test_share_process_namespace_false_is_kept_when_nothing_signals() -> None:
    text = deployment(spec="      shareProcessNamespace: false\n")
    for args in (
        ["--parts", "metrics-proxy"],
        NOTHING_SIGNALS,
    ):
        code, out, err = inject(text, args)
        assert code == 0, err
        assert pod_spec(out)["spec"]["shareProcessNamespace"] is False


def test_no_shared_pid_namespace_when_nothing_signals() -> None:
    # Sharing it exposes every container's /proc/<pid>/environ to the others: only on need.
    code, out, err = inject(DEPLOYMENT, NOTHING_SIGNALS)
    assert code == 0, err
    assert "shareProcessNamespace" not in pod_spec(out)["spec"]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (
            "          ports: [{containerPort: 8081, name: admin}]\n",
            "container 'nginx' declares port 8081, where sidecars inject puts nginx's stub_status",
        ),
        (
            "        - name: exporter\n          image: busybox\n"
            "          ports: [{containerPort: 9113}]\n",
            "container 'exporter' declares port 9113, which sidecars inject's 'metrics-proxy' ",
        ),
        (
            "          ports: [{containerPort: 8080, name: metrics}]\n",
            "container 'nginx' names a port 'metrics', as sidecars inject's 'metrics-proxy' does",
        ),
    ],
)
def test_a_port_of_ours_already_taken_is_refused(ports: str, expected: str) -> None:
    err = refused(deployment(ports))
    assert expected in err, err


def test_the_stub_status_port_is_free_to_use_without_the_metrics_proxy() -> None:
    text = deployment("          ports: [{containerPort: 8081, name: admin}]\n")
    code, _, err = inject(text, ["--parts", "config-fetcher,log-shipper"])
    assert code == 0, err


def test_two_workloads_of_one_name_share_one_config_map() -> None:
    text = (
        deployment()
        + "---\n"
        + deployment(kind="StatefulSet").replace(
            "spec:\n  selector", "spec:\n  serviceName: web\n  selector"
        )
    )
    code, out, err = inject(text, [])
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "StatefulSet"]
    assert "StatefulSet/web: injected" in err and "ConfigMap/web-sidecars-nginx" in err
    code, again, err = inject(out, [])
    assert (code, again) == (0, out), err


def test_two_workloads_of_one_name_in_two_namespaces_get_one_each() -> None:
    other = deployment().replace("  name: web\n", "  name: web\n  namespace: shop\n", 1)
    code, out, err = inject(deployment() + "---\n" + other, [])
    assert code == 0, err
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in yaml.safe_load_all(out)]
    assert kinds == [
        ("ConfigMap", None),
        ("Deployment", None),
        ("ConfigMap", "shop"),
        ("Deployment", "shop"),
    ]


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_config_map_of_the_users_by_our_name_is_refused(where: str) -> None:
    theirs = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-sidecars-nginx}\ndata: {}\n"
    docs = [theirs, DEPLOYMENT] if where == "before" else [DEPLOYMENT, theirs]
    err = refused("---\n".join(docs))
    assert "ConfigMap/web-sidecars-nginx" in err and "rename yours" in err, err


@pytest.mark.parametrize(
    "prefix",
    ["", "/", "ghcr.io/acme/sidecars:1.0", "ghcr.io/Acme/sidecars", "ghcr.io/a b", "ghcr.io//x"],
)
def test_an_image_prefix_that_makes_no_image_name_is_refused(prefix: str) -> None:
    err = refused(DEPLOYMENT, "--image-prefix", prefix)
    assert f"--image-prefix {prefix!r}" in err, err


@pytest.mark.parametrize(
    "prefix", ["ghcr.io/acme/sidecars", "ghcr.io/acme/sidecars/", "reg:5000/team", "localhost"]
)
def test_an_image_prefix_keeps_the_images_names_and_tags(prefix: str) -> None:
    code, out, err = inject(DEPLOYMENT, ["--image-prefix", prefix])
    assert code == 0, err
    spec = pod_spec(out)["spec"]
    images = {c["image"] for c in spec["initContainers"]}
    base = prefix.rstrip("/")
    assert images == {
        f"{base}/{n}:0.1.0" for n in ("config-fetcher", "log-shipper", "metrics-proxy")
    }


@pytest.mark.parametrize(
    "parts", ["config-fetcher", "config-fetcher,metrics-proxy", "config-fetcher,log-shipper"]
)
def test_nginx_writes_the_error_log_the_fetcher_finds_it_by(parts: str) -> None:
    from sidecars import docs
    from sidecars.runtime.settings import options

    code, out, err = inject(DEPLOYMENT, ["--parts", parts])
    assert code == 0, err
    conf = next(d for d in yaml.safe_load_all(out) if d["kind"] == "ConfigMap")["data"][
        nginx_conf.CONF_KEY
    ]
    spec = pod_spec(out)["spec"]
    fetcher = next(c for c in spec["initContainers"] if c["name"] == "config-fetcher")
    default = next(
        o
        for o in options(docs.settings_class("config-fetcher"), "config-fetcher")
        if o.env == "CONFIG_FETCHER_NGINX_ERROR_LOG"
    )
    error_log = str(default.default)
    (mount,) = (m for m in fetcher["volumeMounts"] if error_log.startswith(m["mountPath"] + "/"))
    nginx = next(c for c in spec["containers"] if c["name"] == "nginx")
    (app_mount,) = (m for m in nginx["volumeMounts"] if m["name"] == mount["name"])
    in_nginx = app_mount["mountPath"] + error_log[len(mount["mountPath"]) :]
    assert f"error_log {in_nginx} " in conf, conf


def test_a_pod_field_the_user_changed_after_injection_is_kept() -> None:
    code, out, err = inject(DEPLOYMENT, [])
    assert code == 0, err
    assert "      terminationGracePeriodSeconds: 45\n" in out
    edited = out.replace(
        "      terminationGracePeriodSeconds: 45\n", "      terminationGracePeriodSeconds: 90\n"
    )
    code, again, err = inject(edited, [])
    assert code == 0, err
    assert pod_spec(again)["spec"]["terminationGracePeriodSeconds"] == 90
    code, third, err = inject(again, [])
    assert (code, third) == (0, again), err


def test_an_annotation_the_user_changed_after_injection_is_kept() -> None:
    code, out, err = inject(DEPLOYMENT, [])
    assert code == 0, err
    edited = out.replace("prometheus.io/path: /metrics", "prometheus.io/path: /stats")
    assert edited != out
    code, again, err = inject(edited, [])
    assert code == 0, err
    assert pod_spec(again)["metadata"]["annotations"]["prometheus.io/path"] == "/stats"


def test_the_template_still_names_what_these_tests_assume() -> None:
    tpl = template.packaged()
    assert tpl.first_port("metrics-proxy") == 9113
    assert tpl.pod["terminationGracePeriodSeconds"] == 45


@pytest.mark.parametrize(
    ("version", "mode"),
    [
        ("1.28", "classic"),
        ("v1.28.15", "classic"),
        ("1.29", "native"),
        ("v1.29.0", "native"),
        ("1.31", "native"),
        ("2.0", "native"),
        ("1.3", "classic"),
    ],
)
def test_the_kube_version_boundary(version: str, mode: str) -> None:
    code, _, err = inject(DEPLOYMENT, ["--kube-version", version])
    assert code == 0, err
    assert f"({mode} sidecars)" in err, err


@pytest.mark.parametrize("version", ["1", "1.x", "one.29", "1.29.0.1", "1.29-gke", "-1.29"])
def test_a_kube_version_that_is_no_version_is_refused(version: str) -> None:
    assert f"--kube-version {version!r}: expected X.Y" in refused(
        DEPLOYMENT, "--kube-version", version
    )


def test_a_fetcher_setting_goes_to_both_fetchers_and_only_to_them() -> None:
    url = "https://config.example/site.tar.gz"
    code, out, err = inject(DEPLOYMENT, ["--env", f"CONFIG_FETCHER_SOURCE={url}"])
    assert code == 0, err
    spec = pod_spec(out)["spec"]
    having = {
        c["name"]
        for c in spec["initContainers"]
        for e in c.get("env", [])
        if e["name"] == "CONFIG_FETCHER_SOURCE" and e.get("value") == url
    }
    assert having == {"config-fetcher-init", "config-fetcher"}
    assert out.count(url) == 2


def test_the_stub_status_server_follows_the_metrics_proxy_url() -> None:
    url = "http://127.0.0.1:9999/stub_status"
    args = ["--parts", "metrics-proxy", "--env", f"METRICS_PROXY_STUB_STATUS_URL={url}"]
    code, out, err = inject(DEPLOYMENT, args)
    assert code == 0, err
    assert "    listen 127.0.0.1:9999;\n" in out and "8081" not in out
    # Another host's stub_status: nothing for nginx to serve here.
    args[-1] = "METRICS_PROXY_STUB_STATUS_URL=http://nginx-status.example:8081/stub_status"
    code, out, err = inject(DEPLOYMENT, args)
    assert code == 0, err
    assert "stub_status;" not in out


def test_a_document_end_marker_after_a_workload_is_kept() -> None:
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    code, out, err = inject("---\n" + DEPLOYMENT + "...\n---\n" + service, [])
    assert code == 0, err
    assert out.endswith("...\n---\n" + service), out[-300:]
    code, again, err = inject(out, [])
    assert (code, again) == (0, out), err


SUBSETS = {
    # parts: (conf.d lines, volumes added, shared PID namespace)
    "log-shipper": (
        {"log_format", "access_log", "error_log"},
        {"logs", "log-shipper-state", "log-shipper-secrets", nginx_conf.VOLUME},
        True,  # it rotates the logs, then USR1s nginx
    ),
    "metrics-proxy": (
        {"log_format", "access_log", "stub_status"},
        {"logs", "metrics-proxy-state", nginx_conf.VOLUME},  # its access-log positions
        False,
    ),
    "config-fetcher": ({"error_log", "include"}, {"site", "run", "logs", nginx_conf.VOLUME}, True),
}


@pytest.mark.parametrize("parts", SUBSETS)
def test_a_subset_gets_only_what_it_needs(parts: str) -> None:
    conf_words, volumes, shared = SUBSETS[parts]
    code, out, err = inject(DEPLOYMENT, ["--parts", parts])
    assert code == 0, err
    conf = next(d for d in yaml.safe_load_all(out) if d["kind"] == "ConfigMap")["data"][
        nginx_conf.CONF_KEY
    ]
    directives = {"log_format", "access_log", "error_log", "stub_status", "include"}
    found = {w for w in directives if re.search(rf"^\s*{w}\b", conf, flags=re.M)}
    assert found == conf_words, conf
    spec = pod_spec(out)["spec"]
    assert {v["name"] for v in spec["volumes"]} == volumes
    assert spec.get("shareProcessNamespace", False) is shared
    validate(out, NATIVE[-1:])


def test_stdin_by_dash_and_a_missing_file_in_one_line(tmp_path) -> None:
    code, out, err = inject(DEPLOYMENT, ["-f", "-"])
    assert code == 0 and "config-fetcher-init" in out, err
    err = refused("", "-f", str(tmp_path / "nope.yaml"))
    assert (
        err == f"sidecars inject: cannot read {tmp_path / 'nope.yaml'}: No such file or directory\n"
    )


def test_an_edit_to_one_of_our_containers_is_replaced_and_reported() -> None:
    code, out, err = inject(DEPLOYMENT, [])
    assert code == 0, err
    code, again, err = inject(out, [])
    assert (code, again) == (0, out) and "warning: container" not in err, err
    shipper = out.index("- name: log-shipper\n")
    limit = out.index("memory: 192Mi", shipper)
    edited = out[:limit] + "memory: 512Mi" + out[limit + len("memory: 192Mi") :]
    code, again, err = inject(edited, [])
    assert (code, again) == (0, out), err
    assert (
        "warning: container 'log-shipper' differed from what sidecars inject adds: replaced "
        "(give its settings with --env)" in err
    ), err


@pytest.mark.parametrize(
    ("extra", "line", "what"),
    [
        # The corpus Deployment has 14 lines: what is added starts on line 15.
        ("        - name: log-shipper\n          image: busybox\n", 15, "container 'log-shipper'"),
        ("        - name: other\n          image: nginx:1.26\n", 15, "all run nginx images"),
        ("          ports: [{containerPort: 9113}]\n", 15, "declares port 9113"),
        (
            "          volumeMounts:\n            - {name: x, mountPath: /srv/site}\n",
            16,
            "/srv/site",
        ),
    ],
)
def test_a_refusal_names_the_line_of_what_is_wrong(extra: str, line: int, what: str) -> None:
    err = refused(DEPLOYMENT + extra)
    assert err.startswith(f"sidecars inject: document 1, line {line}: "), err
    assert what in err, err


def test_a_refusal_inside_a_later_document_counts_lines_from_the_stream() -> None:
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n"
    err = refused(service + deployment(spec="      shareProcessNamespace: false\n"))
    assert err.startswith("sidecars inject: document 2, line 16: the Pod sets"), err


def test_the_marker_records_this_version_and_an_older_injection_is_replaced() -> None:
    from sidecars import __version__

    code, out, err = inject(DEPLOYMENT, [])
    assert code == 0, err
    record = json.loads(pod_spec(out)["metadata"]["annotations"][MARKER])
    assert record["version"] == __version__
    older = out.replace(f'"version":"{__version__}"', '"version":"0.0.1"')
    assert older != out
    code, again, err = inject(older, [])
    assert (code, again) == (0, out), err
    assert "replacing an earlier injection" in err


@pytest.mark.parametrize(
    "name",
    ["LOG_SHIPPER_LOKI_BEARER_TOKEN", "LOG_SHIPPER_LOKI_PASSWORD", "LOG_SHIPPER_HTTP_HEADER"],
)
def test_a_credential_is_never_written_into_the_manifest(name: str) -> None:
    value = "Authorization: Bearer s3cr3t" if name.endswith("HEADER") else "s3cr3t"
    err = refused(DEPLOYMENT, "--env", f"{name}={value}")
    assert f"--env {name}: " in err and f"--env {name}_FILE=" in err, err
    assert "s3cr3t" not in err
    # The file setting is the way, as the template's comments show.
    path = "/var/run/secrets/sidecars/x"  # the Pod's: not on this machine
    code, out, err = inject(DEPLOYMENT, ["--env", f"{name}_FILE={path}"])
    assert code == 0, err
    assert f"value: {path}\n" in out


def test_a_password_inside_a_url_is_never_written_into_the_manifest() -> None:
    err = refused(DEPLOYMENT, "--env", "LOG_SHIPPER_SINK=stdout,loki=https://u:s3cr3t@loki.example")
    assert "--env LOG_SHIPPER_SINK: a password in a URL" in err and "s3cr3t" not in err, err
    code, _, err = inject(DEPLOYMENT, ["--env", "LOG_SHIPPER_SINK=loki=https://u@loki.example"])
    assert code == 0, err


def test_the_other_documents_come_back_byte_for_byte_and_in_order() -> None:
    others = [
        "# Source: chart/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\n"
        "metadata: &meta {name: web, labels: {a: b}}  # an anchor\n",
        "",  # an empty document
        "# only a comment\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: &l {a: b}}\n"
        "spec:\n  selector: *l\n  ports: [{port: 80}]\n",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {x: 0644}\n",
    ]
    text = "--- # first\n" + "---\n".join([*others[:2], DEPLOYMENT, *others[2:]])
    code, out, err = inject(text, [])
    assert code == 0, err
    start = 0
    for doc in others:
        found = out.index(doc, start)
        start = found + len(doc)
    assert out.startswith("--- # first\n" + others[0] + "---\n---\n")
    assert out.endswith("---\n".join(others[2:]))


def test_a_byte_order_mark_comes_back_and_reinjection_changes_nothing() -> None:
    # Windows editors write one; the output is the input's bytes where we own nothing.
    code, out, err = inject("\ufeff" + DEPLOYMENT, [])
    assert code == 0, err
    assert out.startswith("\ufeff") and out.count("\ufeff") == 1, out[:80]
    assert yaml.safe_load_all(out.lstrip("\ufeff"))
    code, again, err = inject(out, [])
    assert (code, again) == (0, out), err
    code, plain, err = inject(DEPLOYMENT, [])
    assert (code, "\ufeff" + plain) == (0, out), err
