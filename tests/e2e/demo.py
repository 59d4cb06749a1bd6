"""The demo (k8s/demo/run.sh): the same hermetic podman, images and manifests as the e2e tests,
left running for a person to look at.

  python -m tests.e2e.demo [--port 8080] [--metrics-port 9113]
        build, play the origin and the injected Deployment (k8s/deployment.yaml's source), make
        a few requests, print the page, their per-status counts and their shipped log lines
  python -m tests.e2e.demo down               remove everything, restore the host
  python -m tests.e2e.demo podman ARGS...     podman on the demo's engine (logs, ps, exec...)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from k8s import variants
from sidecars.inject import nginx_conf
from tests.e2e import images, injected, pods
from tests.e2e.engine import Podman, missing_tools
from tests.e2e.test_metrics_proxy_pod import responses, samples
from tests.support.procs import free_port, http_get, wait_until

ROOT = Path(os.environ.get("SIDECARS_DEMO_DIR", "/var/tmp/sidecars-demo"))
RUN = "bash k8s/demo/run.sh"
POD = "web"  # the Deployment's name, one replica
RESPONSES = "nginx_http_responses_total"
PAGE_REQUESTS, MISSING_REQUESTS = 5, 3
MISSING = "/demo-missing"


def say(message: str) -> None:
    print(message, flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def down() -> int:
    if not (ROOT / "engine.json").exists():
        say(f"demo: nothing to tear down ({ROOT} holds no demo)")
        return 0
    for note in Podman.attach(ROOT).close():
        say(f"demo: {note}")
    say("demo: torn down (pods, volumes, network, images, engine state, host firewall rules)")
    return 0


def following(page_url: str, metrics_url: str) -> bool:
    """Whether the metrics-proxy counts the page's requests yet. Sidecars that run as regular
    containers (podman, classic) start in no order; with the manifests' --state-file the proxy
    counts an access log it has not seen from its start, also the requests nginx answered before
    it started, but it may not be serving yet. So a request, then a look at the count, until it
    moves."""
    http_get(page_url, timeout=5)
    status, body, _ = http_get(metrics_url, timeout=5)
    return status == 200 and responses(samples(body), "200") >= 1


def demo_traffic(url: str) -> list[str]:
    """A few requests the demo can point at afterwards: the page (200) and missing pages (404)."""
    paths = ["/"] * PAGE_REQUESTS + [f"{MISSING}-{n}" for n in range(MISSING_REQUESTS)]
    for path in paths:
        http_get(url + path, timeout=5)
    return paths


def counts(metrics_url: str) -> dict | None:
    """The metrics-proxy's series once they count the demo's requests (200s and 404s)."""
    status, body, _ = http_get(metrics_url, timeout=5)
    series = samples(body) if status == 200 else {}
    done = (
        responses(series, "200") >= PAGE_REQUESTS and responses(series, "404") >= MISSING_REQUESTS
    )
    return series if done else None


def shipped(engine: Podman, container: str) -> list[str]:
    """The log-shipper's stdout-sink lines of the demo's 404s, once all of them are there."""
    lines = [line for line in engine.logs(container).splitlines() if MISSING in line]
    return lines if len(lines) >= MISSING_REQUESTS else []


def up(port: int, metrics_port: int) -> int:
    missing = missing_tools()
    if missing:
        say(f"demo: needs {', '.join(missing)}; {RUN} installs the packages when run as root")
        return 1
    if (ROOT / "engine.json").exists():
        say("demo: an earlier demo is still up; tearing it down first")
        down()
    for wanted_port, flag in ((port, "--port"), (metrics_port, "--metrics-port")):
        if not port_free(wanted_port):
            say(f"demo: port {wanted_port} is taken; choose another: {RUN} {flag} N")
            return 1
    engine = Podman.start(ROOT, outlives_process=True)
    wanted = images.manifest_images(
        doc for manifest in images.MANIFESTS for doc in variants.load(manifest)
    )
    say(f"demo: building {', '.join(wanted)} (base image from the host's apt sources)...")
    built = images.make_images(engine, ROOT / "build", wanted)
    for step, seconds in built.timings.items():
        say(f"  {step:<40} {seconds:6.1f} s")
    say(f"demo: building {injected.OFFICIAL_IMAGE} (nginx in the official image's layout)...")
    image = injected.build_official_layout(engine, ROOT / "official-layout")

    origin = pods.play(engine, pods.ORIGIN_POD)
    if origin.play.returncode != 0:
        say(f"demo: the origin pod did not start:\n{origin.play.stderr}")
        return 1
    pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the demo origin")
    docs = injected.inject()
    fixed = {8080: port, 9113: metrics_port}
    host_ports = {p: fixed.get(p) or free_port() for p in injected.container_ports(docs)}
    pod = injected.podman_pod(docs, ROOT / "nginx-conf", image, POD, host_ports)
    play = engine.play(variants.dump(pod), POD)
    if play.returncode != 0:
        init_log = engine.logs(f"{POD}-config-fetcher-init")
        say(f"demo: the Pod did not start:\n{play.stderr}\ninit container log:\n{init_log}")
        say(f"tear down with: {RUN} --down")
        return 1
    page_url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    body = pods.wait_http_ok(page_url + "/", what="nginx in the demo Pod").decode()
    say(f"\n$ curl {page_url}/\n{body}")
    wait_until(
        lambda: following(page_url + "/", metrics_url),
        timeout=60,
        interval=0.5,
        what="the metrics-proxy following the access log",
    )
    paths = demo_traffic(page_url)
    say(f"demo: requested {', '.join(paths)}")
    series = wait_until(
        lambda: counts(metrics_url), timeout=60, interval=0.5, what="the requests in the metrics"
    )
    say(f"\n$ curl -s {metrics_url} | grep ^{RESPONSES}")
    for (name, labels), value in sorted(series.items(), key=lambda item: sorted(item[0][1])):
        if name == RESPONSES:
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
            say(f"{name}{{{label_text}}} {value:g}")
    lines = wait_until(
        lambda: shipped(engine, f"{POD}-log-shipper"), timeout=60, what="the shipped log lines"
    )
    say(f"\n$ {RUN} podman logs {POD}-log-shipper | grep {MISSING}")
    for line in lines:
        say(line)
    say(
        f"""
The demo Pod is up: `sidecars inject` of k8s/workloads/nginx-deployment.yaml (the Deployment
in k8s/deployment.yaml, classic sidecars: podman 4.3 has no native ones), one replica played
by podman with nginx in the official image's layout, fetching its site from the demo origin.
  page:          curl {page_url}/
  metrics:       curl {metrics_url}   (the metrics-proxy: {RESPONSES} by status...)
  shipped logs:  {RUN} podman logs -f {POD}-log-shipper   (the log-shipper's stdout sink)
  nginx's logs:  {RUN} podman exec {POD}-nginx cat {nginx_conf.LOGS_IN_APP}/access.log
  containers:    {RUN} podman ps -a --pod
  other logs:    {RUN} podman logs {POD}-config-fetcher-init
                 {RUN} podman logs {POD}-config-fetcher
                 {RUN} podman logs {POD}-nginx
  tear down:     {RUN} --down"""
    )
    return 0


def passthrough(args: Sequence[str]) -> int:
    if not (ROOT / "engine.json").exists():
        say(f"demo: no demo is up; start it with {RUN}")
        return 1
    engine = Podman.attach(ROOT)
    return subprocess.run(["podman", *args], env=engine.env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["podman"]:
        return passthrough(args[1:])
    parser = argparse.ArgumentParser(prog=RUN, description="the sidecars demo Pod on podman")
    parser.add_argument("--down", action="store_true", help="tear the demo down")
    parser.add_argument("--port", type=int, default=8080, help="host port of nginx (8080)")
    parser.add_argument(
        "--metrics-port", type=int, default=9113, help="host port of the metrics-proxy (9113)"
    )
    options = parser.parse_args(args)
    if options.down:
        return down()
    try:
        return up(options.port, options.metrics_port)
    except Exception as exc:
        say(f"demo: failed: {exc}\n  tear down with: {RUN} --down")
        return 1


if __name__ == "__main__":
    sys.exit(main())
