"""The demo (k8s/demo/run.sh): the same hermetic podman, images and manifests as the e2e tests,
left running for a person to look at.

  python -m tests.e2e.demo up [--port 8080]   build, play origin + app Pod, print the page
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
from tests.e2e import images, pods
from tests.e2e.engine import Podman, missing_tools

ROOT = Path(os.environ.get("SIDECARS_DEMO_DIR", "/var/tmp/sidecars-demo"))
RUN = "bash k8s/demo/run.sh"


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


def up(port: int) -> int:
    missing = missing_tools()
    if missing:
        say(f"demo: needs {', '.join(missing)}; {RUN} installs the packages when run as root")
        return 1
    if (ROOT / "engine.json").exists():
        say("demo: an earlier demo is still up; tearing it down first")
        down()
    if not port_free(port):
        say(f"demo: port {port} is taken; choose another: {RUN} --port N")
        return 1
    engine = Podman.start(ROOT, outlives_process=True)
    wanted = images.manifest_images(
        doc for manifest in images.MANIFESTS for doc in variants.load(manifest)
    )
    say(f"demo: building {', '.join(wanted)} (base image from the host's apt sources)...")
    built = images.make_images(engine, ROOT / "build", wanted)
    for step, seconds in built.timings.items():
        say(f"  {step:<40} {seconds:6.1f} s")

    origin = pods.play(engine, pods.ORIGIN_POD)
    if origin.play.returncode != 0:
        say(f"demo: the origin pod did not start:\n{origin.play.stderr}")
        return 1
    pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the demo origin")
    app = pods.play(engine, pods.APP_POD, ports={8080: port})
    if app.play.returncode != 0:
        init_log = engine.logs(f"{app.name}-config-fetcher-init")
        say(f"demo: the Pod did not start:\n{app.play.stderr}\ninit container log:\n{init_log}")
        say(f"tear down with: {RUN} --down")
        return 1
    body = pods.wait_http_ok(app.url(8080), what="nginx in the demo Pod").decode()
    say(f"\n$ curl http://127.0.0.1:{port}/\n{body}")
    say(
        f"""The demo Pod is up (podman kube play of k8s/pod.yaml, podman variant).
  page:        curl http://127.0.0.1:{port}/
  containers:  {RUN} podman ps -a --pod
  logs:        {RUN} podman logs {app.name}-config-fetcher-init
               {RUN} podman logs {app.name}-config-fetcher
               {RUN} podman logs {app.name}-nginx
  nginx logs:  {RUN} podman exec {app.name}-nginx cat /var/log/nginx/access.log
  tear down:   {RUN} --down"""
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
    options = parser.parse_args(args)
    if options.down:
        return down()
    try:
        return up(options.port)
    except Exception as exc:
        say(f"demo: failed: {exc}\n  tear down with: {RUN} --down")
        return 1


if __name__ == "__main__":
    sys.exit(main())
