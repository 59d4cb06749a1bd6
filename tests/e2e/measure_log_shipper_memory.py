"""Memory and CPU of the log-shipper in the real Pod: what its resources in k8s/pod.yaml are
sized from. The e2e harness builds the images and plays the podman variant of k8s/pod.yaml on a
hermetic podman (everything removed afterwards); wrk loads nginx through the Pod's host port on
127.0.0.1 for a bounded time.

    .venv/bin/python -m tests.e2e.measure_log_shipper_memory [--hang SECONDS]   (root, podman)

Two Pods, one after the other: the manifest as shipped (sink stdout), then two sinks at once
(HTTP NDJSON and RELP to rsyslogd, both on the host) where the HTTP receiver hangs for --hang
seconds under load, so a backlog builds up behind it, and is then released to drain. Memory is
the container's cgroup peak (what a memory limit is enforced against) and the process's VmHWM;
CPU is the process's user+system time.

Results (2 cores, Debian 12, podman 4.3, the default --hang 30; 2026-11-24 09:49 UTC, after
the parts stopped loading aiohttp's server and the shipper its client):

| Pod, phase                                        | cgroup peak | VmHWM   | CPU    |
|---------------------------------------------------|-------------|---------|--------|
| stdout, idle                                      | 20 MiB      | 30 MiB  | 0.2 s  |
| stdout, 15 s at 15,300 req/s (230k lines)         | 69 MiB      | 79 MiB  | 4.3 s  |
| http+relp, 15 s at 11,100 req/s (167k lines)      | 67 MiB      | 77 MiB  | 6.7 s  |
| http+relp, http hung 30 s (~49 MB log)            | 67 MiB      | 77 MiB  | 19.3 s |
| http+relp, drained in 7.9 s (552k lines)          | 67 MiB      | 77 MiB  | 21.6 s |

The backlog behind a hung sink no longer raises the peak (the queues are byte-bounded; the
earlier run, with aiohttp, peaked at 121-130 MiB draining 33-87 MB). What the load phase holds
is mostly the parsed fields: the manifest sets LOG_SHIPPER_FORMAT, and a line's fields take
several times the line's bytes while its batch is open (bench/log_shipper measures the drain
without a format: 39.6 MB). The manifest's request, 64 MiB, is about what it holds while
shipping a steady load; its limit, 192 MiB, leaves room for bursts and longer lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from k8s import variants
from tests.e2e import images as images_mod
from tests.e2e import pods
from tests.e2e.engine import Podman, missing_tools
from tests.e2e.test_log_shipper_pod import bridge_gateway, line_count, log_dir, shipped
from tests.support.ndjson_receiver import Receiver
from tests.support.procs import wait_until
from tests.support.rsyslog import Rsyslog, have_module, have_rsyslog


def cgroup_memory(pid: int) -> Path:
    """The process's memory cgroup directory (v1 memory controller, else the v2 group)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
    (path,) = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    return Path("/sys/fs/cgroup" + path)


def usage(engine: Podman, container: str) -> dict[str, float]:
    """MiB and CPU seconds of the container's main process so far."""
    pid = engine.inspect(container)["State"]["Pid"]
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    group = cgroup_memory(pid)
    peak_file = next(
        p for p in (group / "memory.max_usage_in_bytes", group / "memory.peak") if p.exists()
    )
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "cgroup_peak_mib": int(peak_file.read_text()) / 2**20,
        "vmhwm_mib": int(status["VmHWM"].split()[0]) / 1024,
        "cpu_s": (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK"),  # utime+stime
    }


def load(url: str, seconds: float) -> str:
    """Bounded load: wrk for ``seconds`` against nginx through the Pod's host port."""
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{int(seconds)}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))


@contextmanager
def app_pod(engine: Podman, name: str, sinks: str) -> Iterator[pods.PlayedPod]:
    pod = pods.play(engine, pods.APP_POD, name=name, env={"LOG_SHIPPER_SINK": sinks})
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        pods.wait_http_ok(pod.url(9102, "/readyz"), what="log-shipper /readyz")
        pods.wait_http_ok(pod.url(8080), what="nginx up")
        yield pod
    finally:
        engine.down(pod.name)


def caught_up(engine: Podman, pod: pods.PlayedPod, sinks: int, timeout: float) -> int:
    logs = log_dir(engine, pod)

    def done() -> int | None:
        lines, now = line_count(logs), shipped(pod)
        return lines if len(now) == sinks and set(now.values()) == {lines} else None

    return wait_until(done, timeout=timeout, interval=0.5, what="every line shipped")


def row(what: str, numbers: dict[str, float]) -> None:
    print(
        f"| {what:<46} | {numbers['cgroup_peak_mib']:6.0f} MiB | {numbers['vmhwm_mib']:4.0f} MiB "
        f"| {numbers['cpu_s']:5.1f} s |",
        flush=True,
    )


def measure(engine: Podman, scratch: Path, hang: float) -> None:
    print("| Pod, phase | cgroup peak | VmHWM | CPU |\n|---|---|---|---|")
    with app_pod(engine, "measure-stdout", "stdout") as pod:
        container = f"{pod.name}-log-shipper"
        caught_up(engine, pod, 1, 60)
        row("stdout, idle", usage(engine, container))
        rate = load(pod.url(8080), 15)
        lines = caught_up(engine, pod, 1, 300)
        row(f"stdout, 15 s at {rate} req/s ({lines} lines)", usage(engine, container))

    gateway = bridge_gateway(engine)
    http = Receiver(scratch / "http", host=gateway)
    relp = Rsyslog(scratch / "rsyslog", address=gateway)
    try:
        http.start()
        relp.start()
        sinks = f"http={http.url},relp={gateway}:{relp.relp_port}"
        with app_pod(engine, "measure-two", sinks) as pod:
            container = f"{pod.name}-log-shipper"
            caught_up(engine, pod, 2, 60)
            rate = load(pod.url(8080), 15)
            lines = caught_up(engine, pod, 2, 300)
            row(f"http+relp, 15 s at {rate} req/s ({lines} lines)", usage(engine, container))
            http.control(hang=True)
            try:
                load(pod.url(8080), hang)
                backlog = (log_dir(engine, pod) / "access.log").stat().st_size / 1e6
                row(
                    f"http+relp, http hung {hang:.0f} s (~{backlog:.0f} MB log)",
                    usage(engine, container),
                )
            finally:
                http.control(hang=False)
            start = time.monotonic()
            lines = caught_up(engine, pod, 2, 900)
            took = time.monotonic() - start
            row(f"http+relp, drained in {took:.1f} s ({lines} lines)", usage(engine, container))
    finally:
        http.stop()
        relp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hang", type=float, default=30, help="seconds the HTTP receiver hangs")
    args = parser.parse_args()
    missing = missing_tools() + [t for t in ("wrk",) if shutil.which(t) is None]
    if not have_rsyslog() or not have_module("imrelp"):
        missing.append("rsyslog with imrelp")
    if missing:
        parser.error(f"needs {', '.join(missing)} (bash tests/run --install-only)")
    root = Path(tempfile.mkdtemp(prefix="sidecars-measure-"))
    engine = Podman.start(root / "engine")
    try:
        wanted = images_mod.manifest_images(
            doc for manifest in images_mod.MANIFESTS for doc in variants.load(manifest)
        )
        images_mod.make_images(engine, engine.root / "build", wanted)
        origin = pods.play(engine, pods.ORIGIN_POD)
        try:
            assert origin.play.returncode == 0, origin.play.stderr
            pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the demo origin")
            measure(engine, root / "scratch", args.hang)
        finally:
            engine.down(origin.name)
    finally:
        engine.close()
        with suppress(OSError):
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
