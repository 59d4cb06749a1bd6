"""The injected Deployment on podman, shared by its e2e test and the demo: `sidecars inject` of
the plain nginx workload (k8s/workloads/nginx-deployment.yaml) played with an nginx image built
here to the official image's layout (no registry is reachable to pull the official one).

The image is built from the project's nginx image (Debian's nginx) to the official image's
layout: its nginx.conf (`main` access log, `include /etc/nginx/conf.d/*.conf`, pid
/var/run/nginx.pid, `user nginx`), /var/log/nginx/{access,error}.log symlinks to
/dev/stdout and /dev/stderr, temp files under /var/cache/nginx, and `nginx -g 'daemon off;'`.
The injected Pod is classic (podman 4.3 has no native sidecars), its ConfigMap volume a hostPath
file (4.3 has no configMap volumes).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from k8s import variants
from sidecars.inject import main as inject_main
from sidecars.inject import nginx_conf
from tests.e2e.engine import Podman

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
# The official image's nginx is built with its temp paths under /var/cache/nginx (client_temp,
# proxy_temp...), the one directory its nginx.conf leaves writable besides logs and pid; Debian's
# nginx has them compiled in under /var/lib/nginx (body, proxy...), which a read-only root refuses
# ("mkdir() /var/lib/nginx/body failed (30: Read-only file system)", nginx exits 1): the symlink
# puts them where the official image has them, on the workload's own /var/cache/nginx volume.
# podman makes each emptyDir a named volume whose owner is copied from the image's directory at
# the mount point (Kubernetes' emptyDirs are world-writable): the paths the injected Pod mounts
# in nginx are made UID 101's here, as a user's image running as 101 has them.
CONTAINERFILE = f"""\
FROM localhost/sidecars/nginx:0.1.0
USER 0
COPY nginx.conf /etc/nginx/nginx.conf
RUN rm -rf /var/log/nginx /etc/nginx/conf.d /var/lib/nginx \\
    && mkdir -p /var/log/nginx /etc/nginx/conf.d /var/cache/nginx {nginx_conf.LOGS_IN_APP} \\
    && ln -s /dev/stdout /var/log/nginx/access.log \\
    && ln -s /dev/stderr /var/log/nginx/error.log \\
    && ln -s /var/cache/nginx /var/lib/nginx \\
    && chown 101:101 /run /var/cache/nginx {nginx_conf.LOGS_IN_APP}
USER 101
ENTRYPOINT ["nginx", "-g", "daemon off;"]
"""


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


def inject(env: Sequence[str] = ()) -> list[dict]:
    """`sidecars inject --kube-version 1.28` (classic) of the plain workload, ``--env`` each of
    ``env``: every document it prints."""
    argv = ["--kube-version", "1.28", "-f", str(PLAIN)]
    for item in env:
        argv += ["--env", item]
    out, err = io.StringIO(), io.StringIO()
    code = inject_main.main(argv, stdout=out, stderr=err)
    if code != 0:
        raise RuntimeError(f"sidecars inject exited {code}: {err.getvalue().strip()}")
    return list(yaml.safe_load_all(out.getvalue()))


def container_ports(docs: Sequence[Mapping]) -> list[int]:
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    return [p["containerPort"] for c in variants.all_containers(spec) for p in c.get("ports", [])]


def podman_pod(
    docs: Sequence[Mapping], conf_dir: Path, image: str, name: str, host_ports: Mapping[int, int]
) -> list[dict]:
    """One replica of the injected Deployment as the Pod podman plays (with its ConfigMap's
    nginx conf written into ``conf_dir``), every containerPort on its ``host_ports`` entry."""
    (cm,) = (d for d in docs if d["kind"] == "ConfigMap")
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    conf = conf_dir / nginx_conf.CONF_KEY
    conf_dir.mkdir(parents=True, exist_ok=True)
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
        "metadata": {"name": name, **template["metadata"]},
        "spec": spec,
    }
    return variants.podman_all([pod], host_ports=host_ports)
