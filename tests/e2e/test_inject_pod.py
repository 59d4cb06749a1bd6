"""e2e-pod: `sidecars inject` of the plain nginx Deployment (k8s/workloads/nginx-deployment.yaml)
with an nginx image laid out like the official one, played by podman: the page served, the
access log shipped (log-shipper's stdout sink), nginx's metrics scraped from the metrics-proxy.

The image is built here from the project's nginx image (Debian's nginx) to the official image's
layout: its nginx.conf (`main` access log, `include /etc/nginx/conf.d/*.conf`, pid
/var/run/nginx.pid, `user nginx`), /var/log/nginx/{access,error}.log symlinks to
/dev/stdout and /dev/stderr, and `nginx -g 'daemon off;'`. The injected Pod is classic (podman
4.3 has no native sidecars), its ConfigMap volume a hostPath file (4.3 has no configMap volumes).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k8s import variants
from sidecars.inject import main as inject_main
from sidecars.inject import nginx_conf
from tests.e2e import images as images_mod
from tests.e2e import pods
from tests.e2e.engine import Podman
from tests.e2e.test_metrics_proxy_pod import responses, samples
from tests.support.procs import free_port, http_get, wait_until

pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
PLAIN = REPO / "k8s" / "workloads" / "nginx-deployment.yaml"
OFFICIAL_IMAGE = "localhost/sidecars-test/nginx-official-layout:1"
OFFICIAL_CONF = """\
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    keepalive_timeout  65;

    include /etc/nginx/conf.d/*.conf;
}
"""
# podman makes each emptyDir a named volume whose owner is copied from the image's directory at
# the mount point (Kubernetes' emptyDirs are world-writable): the paths the injected Pod mounts
# in nginx are made UID 101's here, as a user's image running as 101 has them.
CONTAINERFILE = f"""\
FROM localhost/sidecars/nginx:0.1.0
USER 0
COPY nginx.conf /etc/nginx/nginx.conf
RUN rm -rf /var/log/nginx /etc/nginx/conf.d && mkdir -p /var/log/nginx /etc/nginx/conf.d \\
    {nginx_conf.LOGS_IN_APP} && ln -s /dev/stdout /var/log/nginx/access.log \\
    && ln -s /dev/stderr /var/log/nginx/error.log \\
    && chown 101:101 /run /var/cache/nginx {nginx_conf.LOGS_IN_APP}
USER 101
ENTRYPOINT ["nginx", "-g", "daemon off;"]
"""
MARK = uuid.uuid4().hex[:12]


def build_official_layout(engine: Podman, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(OFFICIAL_CONF)
    (workdir / "Containerfile").write_text(CONTAINERFILE)
    engine(
        "build",
        "--tag",
        OFFICIAL_IMAGE,
        "-f",
        str(workdir / "Containerfile"),
        str(workdir),
        timeout=600,
    )
    return OFFICIAL_IMAGE


def injected_pod(conf_dir: Path, image: str) -> tuple[list[dict], dict[int, int]]:
    """The classic injection of the plain Deployment, as the Pod podman plays."""
    out, err = io.StringIO(), io.StringIO()
    code = inject_main.main(["--kube-version", "1.28", "-f", str(PLAIN)], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    docs = list(yaml.safe_load_all(out.getvalue()))
    (cm,) = (d for d in docs if d["kind"] == "ConfigMap")
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    conf = conf_dir / nginx_conf.CONF_KEY
    conf.write_text(cm["data"][nginx_conf.CONF_KEY])
    template = deployment["spec"]["template"]
    spec = template["spec"]
    # This image has no default.conf on port 80, which is what the workload's sysctl is for.
    spec["securityContext"].pop("sysctls", None)
    for volume in spec["volumes"]:
        if "configMap" in volume:  # podman 4.3 plays no configMap volumes
            del volume["configMap"]
            volume["hostPath"] = {"path": str(conf), "type": "File"}
    for container in spec["containers"]:
        if container["name"] == "nginx":
            container["image"] = image
            for mount in container["volumeMounts"]:
                mount.pop("subPath", None)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"inject-{MARK}", **template["metadata"]},
        "spec": spec,
    }
    host_ports = {port: free_port() for port in pods.container_ports([pod])}
    return variants.podman_all([pod], host_ports=host_ports), host_ports


@pytest.fixture(scope="module")
def app(
    engine: Podman, images: images_mod.Built, origin: pods.PlayedPod, tmp_path_factory
) -> Iterator[pods.PlayedPod]:
    image = build_official_layout(engine, engine.root / "official-layout")
    docs, ports = injected_pod(tmp_path_factory.mktemp("conf"), image)
    name = docs[0]["metadata"]["name"]
    result = engine.play(variants.dump(docs), name)
    try:
        assert result.returncode == 0, result.stderr
        yield pods.PlayedPod(name=name, ports=ports, play=result)
    finally:
        engine.down(name)


def test_injected_deployment_serves_ships_and_is_scraped(engine: Podman, app: pods.PlayedPod):
    page = pods.wait_http_ok(app.url(8080, "/"), timeout=120, what="the page via nginx")
    assert b"Hello from the sidecars demo" in page
    for _ in range(3):
        status, _, _ = http_get(app.url(8080, f"/missing-{MARK}"), timeout=5)
        assert status == 404

    def shipped() -> bool:
        return engine.logs(f"{app.name}-log-shipper").count(f"/missing-{MARK}") >= 3

    wait_until(shipped, timeout=60, what="the access-log lines at the log-shipper's sink")

    def scraped() -> dict | None:
        status, body, _ = http_get(app.url(9113, "/metrics"), timeout=5)
        series = samples(body) if status == 200 else {}
        ups = [v for (name, _), v in series.items() if name == "nginx_up"]
        return series if ups == [1.0] and responses(series, "404") >= 3 else None

    wait_until(scraped, timeout=60, interval=0.5, what="nginx_up 1 and the 404s, from :9113")
