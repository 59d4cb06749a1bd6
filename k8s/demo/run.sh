#!/usr/bin/env bash
# The sidecars demo: `sidecars inject` of k8s/workloads/nginx-deployment.yaml (k8s/deployment.yaml)
# on podman, fetching its site from the demo origin.
#
#   bash k8s/demo/run.sh [--port 8080] [--metrics-port 9113]
#                                        install what is missing (as root), build the images from
#                                        the Dockerfile, play origin + the injected Deployment,
#                                        print the page, the metrics' per-status counts of a few
#                                        requests and their shipped log lines
#   bash k8s/demo/run.sh podman ARGS...  podman on the demo's own engine (ps, logs, exec...)
#   bash k8s/demo/run.sh --down          remove everything the demo made
#
# The engine is set up exactly as the e2e tests do it (tests/e2e/engine.py): its state lives in
# /var/tmp/sidecars-demo (SIDECARS_DEMO_DIR), so it never mixes with another podman's.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $EUID -ne 0 ]]; then
    echo "k8s/demo/run.sh: run as root (rootful podman: bridge network and host ports)" >&2
    exit 1
fi
if [[ ${1:-} != --down && ${1:-} != podman ]]; then
    bash tests/run --install-demo
fi
exec .venv/bin/python -m tests.e2e.demo "$@"
