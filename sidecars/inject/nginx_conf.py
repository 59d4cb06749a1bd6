"""What an unchanged nginx image (the official one: its nginx.conf includes
/etc/nginx/conf.d/*.conf inside ``http {}``) must add for the parts: the ``sidecars`` log format
written to the `logs` volume, stub_status on the Pod's localhost, and the published site.

The `logs` volume is mounted in nginx at ``/var/log/nginx/sidecars``, not over /var/log/nginx:
the image's own ``access_log ... main`` stays as it is (its stdout symlink, ``kubectl logs``),
instead of becoming a second, unrotated copy of every request on the volume.
"""

from __future__ import annotations

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import LiteralScalarString

CONF_KEY = "sidecars.conf"
CONF_DIR = "/etc/nginx/conf.d"
VOLUME = "sidecars-nginx-conf"
LOGS_VOLUME = "logs"
LOGS_IN_APP = "/var/log/nginx/sidecars"  # where nginx sees the `logs` volume
# apps/nginx/nginx.conf's format (a unit test keeps them equal): what log-shipper's
# LOG_SHIPPER_FORMAT=sidecars parses and metrics-proxy's latency histograms read.
LOG_FORMAT = """\
log_format sidecars '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
                    '$request_time "$upstream_response_time"';"""


def conf(parts: list[str], *, stub_status_port: int | None, site_dir: str | None) -> str:
    lines = ["# Added by `sidecars inject`; nginx.conf includes it inside http {}."]
    if {"log-shipper", "metrics-proxy"} & set(parts):
        lines += [
            "# The access log in the format the sidecars parse, on the shared `logs` volume.",
            LOG_FORMAT,
            f"access_log {LOGS_IN_APP}/access.log sidecars;",
        ]
    if {"log-shipper", "config-fetcher"} & set(parts):
        # The config-fetcher reads it for a refused reload's [emerg] and, with no pid file it
        # can see, finds the nginx master as the process holding it open.
        lines.append(f"error_log {LOGS_IN_APP}/error.log notice;")
    if "metrics-proxy" in parts and stub_status_port is not None:
        lines += [
            "# stub_status for the metrics-proxy, reachable only over the Pod's localhost; its",
            "# scrapes are not app traffic.",
            "server {",
            f"    listen 127.0.0.1:{stub_status_port};",
            "    access_log off;",
            "    location = /stub_status {",
            "        stub_status;",
            "    }",
            "    location / {",
            "        return 404;",
            "    }",
            "}",
        ]
    if "config-fetcher" in parts and site_dir is not None:
        lines += [
            "# The server blocks config-fetcher publishes (atomically, through ..data symlinks).",
            f"include {site_dir}/conf.d/*.conf;",
        ]
    return "\n".join(lines) + "\n"


def config_map(
    name: str, namespace: str | None, annotations: dict[str, str], text: str
) -> CommentedMap:
    meta = CommentedMap(name=name)
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = CommentedMap({"app.kubernetes.io/managed-by": "sidecars-inject"})
    meta["annotations"] = CommentedMap(annotations)
    doc = CommentedMap(apiVersion="v1", kind="ConfigMap")
    doc["metadata"] = meta
    doc["data"] = CommentedMap({CONF_KEY: LiteralScalarString(text)})
    return doc
