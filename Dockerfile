# One Dockerfile, one target per image:
#   config-fetcher, log-shipper, metrics-proxy   the Python parts (same runtime layer)
#   nginx                                        the app container (apps/nginx/nginx.conf)
#   origin                                       the demo config origin (serves site.tar.gz)
#
#   podman build --target config-fetcher -t localhost/sidecars/config-fetcher:0.1.0 .
#   docker build --target nginx -t localhost/sidecars/nginx:0.1.0 .
#
# Build knobs (all optional):
#   --build-arg BASE_IMAGE=...    Python base for the parts (needs python3 with venv); default
#                                 the official slim image. A local Debian base made with
#                                 mmdebstrap (python3, python3-venv, ca-certificates) works too.
#   --build-arg NGINX_IMAGE=...   base of the nginx and origin images; default the official nginx
#                                 image. Any Debian-based image works: nginx-light is apt-installed
#                                 when the base has no nginx.
#   --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt
#                                 extra CA bundle for pip (a TLS-intercepting corporate proxy).
#                                 Never stored in a layer.
#   --build-arg PIP_INDEX_URL=... / PIP_EXTRA_INDEX_URL=...
#                                 a package index other than pip's default (a mirror).
#   --build-context wheels=DIR    offline install: DIR holds the sidecars wheel and all its
#                                 dependencies (`pip wheel --wheel-dir DIR .` with a Python of the
#                                 same version as the base image); pip then runs with --no-index.

ARG BASE_IMAGE=python:3.12-slim
ARG NGINX_IMAGE=nginx:1.27-bookworm

# Empty unless replaced by `--build-context wheels=DIR`.
FROM scratch AS wheels

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY sidecars ./sidecars
# The venv is the only thing the runtime stage takes; pip and setuptools are removed from it so
# the final images carry no installer or build tooling.
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=bind,from=wheels,target=/wheels \
    set -eu; \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    python3 -m venv /opt/sidecars; \
    if ls /wheels/sidecars-*.whl >/dev/null 2>&1; then \
        /opt/sidecars/bin/pip install --no-index --find-links /wheels sidecars; \
    else \
        /opt/sidecars/bin/pip install /src; \
    fi; \
    /opt/sidecars/bin/pip uninstall --yes pip setuptools >/dev/null 2>&1 || true; \
    /opt/sidecars/bin/python -c "import sidecars, aiohttp, watchfiles, prometheus_client"

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# The official Python image ships pip in its system Python: a final image needs no installer.
RUN python3 -m pip uninstall --yes pip >/dev/null 2>&1 || true
COPY --from=builder /opt/sidecars /opt/sidecars
# No .pyc writes (read-only root filesystem), unbuffered JSON log lines.
ENV PATH=/opt/sidecars/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The same UID/GID as the nginx container, so the config-fetcher may signal the nginx master.
USER 101:101
WORKDIR /tmp

FROM runtime AS config-fetcher
EXPOSE 9101
ENTRYPOINT ["sidecars", "config-fetcher"]

FROM runtime AS log-shipper
EXPOSE 9102
ENTRYPOINT ["sidecars", "log-shipper"]

FROM runtime AS metrics-proxy
EXPOSE 9113
ENTRYPOINT ["sidecars", "metrics-proxy"]

# ---------------------------------------------------------------------------------------------
FROM ${NGINX_IMAGE} AS nginx-base
# The official image has nginx; a plain Debian base gets nginx-light. The official image's
# /var/log/nginx holds symlinks to /dev/stdout: removed, the logs are files on a Pod volume.
# Every path nginx writes is a Pod volume owned by UID/GID 101 (podman copies this ownership
# into a fresh named volume).
# DL3008 (pin apt versions): NGINX_IMAGE may be any Debian release, and a version string exists
# in one release only; whatever nginx-light that release's mirror has is the one wanted.
# hadolint ignore=DL3008
RUN set -eu; \
    if ! command -v nginx >/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends nginx-light; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -rf /var/log/nginx; \
    mkdir -p /var/log/nginx /run/nginx /var/cache/nginx /srv/site /srv/origin; \
    chown 101:101 /var/log/nginx /run/nginx /var/cache/nginx /srv/site

FROM nginx-base AS nginx
COPY apps/nginx/nginx.conf /etc/nginx/nginx.conf
USER 101:101
EXPOSE 8080
# SIGQUIT: graceful shutdown (finish in-flight requests); SIGTERM would be a fast shutdown.
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx", "-e", "stderr", "-g", "daemon off;"]

FROM nginx-base AS origin
COPY apps/origin/nginx.conf /etc/nginx/origin.conf
COPY apps/site /tmp/site
# A reproducible bundle (sorted members, fixed mtime and owner, no gzip name or timestamp).
# Two steps rather than a pipe: sh has no pipefail, so a failing tar would go unnoticed.
RUN set -eu; \
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C /tmp/site -cf /srv/origin/site.tar conf.d html; \
    gzip -9n /srv/origin/site.tar; \
    rm -rf /tmp/site; \
    tar -tzf /srv/origin/site.tar.gz
USER 101:101
EXPOSE 8090
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx", "-e", "stderr", "-c", "/etc/nginx/origin.conf", "-g", "daemon off;"]
