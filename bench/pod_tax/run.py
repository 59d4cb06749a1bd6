"""The sidecar tax in the Pod (issue 12): what the sidecars cost beside the nginx they serve.

    .venv/bin/python -m bench.pod_tax.run [--rates 5000,10000] [--seconds 25] [--no-write]
                                          (root, podman; writes bench/pod_tax/RESULTS.md)

The e2e harness (tests/e2e) builds the images and plays the podman variant of k8s/pod.yaml (and
the demo origin it fetches its site from) on a hermetic podman; everything is removed
afterwards. wrk loads nginx through the Pod's host port on 127.0.0.1, paced by a Lua ``delay()``
at each rate for a bounded window. Each container's CPU seconds come from its cgroup (cpuacct
on cgroup v1, cpu.stat on v2) over the same window, and again once the log-shipper has shipped
every line of the window ("+ drain"); memory is the cgroup's peak since the container started
(what a limit is enforced against) and the largest VmHWM of its processes. The tax is
sum(sidecars' CPU) / nginx's CPU. Then py-spy samples the sidecar that costs the most under
another window at the highest rate (``--profile-seconds 0`` skips it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.metrics_proxy.measure import WrkReport, parse_wrk
from bench.pod_tax import cgroups, charts, report
from bench.stop import unwind_on_sigterm
from k8s import variants
from tests.e2e import images as images_mod
from tests.e2e import pods
from tests.e2e.engine import Podman, missing_tools
from tests.e2e.test_log_shipper_pod import shipped
from tests.support.procs import wait_until

HERE = Path(__file__).resolve().parent
SIDECARS = ("log-shipper", "metrics-proxy", "config-fetcher")
CONTAINERS = ("nginx", *SIDECARS)
DELAY_MS = 10
PROFILE_RATE = 250  # samples/s: the shipper holds the GIL ~10 % of the time, so ~25/s land
PACE = (
    "-- Paces each connection: one request, then DELAY ms of quiet.\n"
    "function delay()\n  return {delay}\nend\n"
)
PYSPY = Path(sys.executable).parent / "py-spy"


@dataclass
class Window:
    rate_asked: int
    wrk: WrkReport
    connections: int
    cpu: dict[str, float]  # container -> CPU s over the load window
    cpu_drain: dict[str, float]  # ... from the window's start until every line was shipped
    drain_s: float | None  # seconds after the window until then (None: not within the timeout)
    peak: dict[str, float | None] = field(default_factory=dict)  # cgroup peak, MiB
    hwm: dict[str, float] = field(default_factory=dict)  # largest VmHWM of its processes, MiB
    # (anonymous, page cache) MiB charged to the cgroup once every line was shipped
    split: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.wrk.requests / self.wrk.seconds

    def tax(self, cpu: dict[str, float]) -> float:
        return sum(cpu[name] for name in SIDECARS) / cpu["nginx"]


def other_engines() -> list[str]:
    """Other podman/buildah processes (another engineer's e2e run): this bench waits for them."""
    out = subprocess.run(["pgrep", "-fa", "podman|buildah"], capture_output=True, text=True)
    mine = {str(os.getpid()), str(os.getppid())}
    return [line for line in out.stdout.splitlines() if line.split(" ", 1)[0] not in mine]


def wrk(url: str, connections: int, seconds: float, script: Path) -> WrkReport:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return parse_wrk(out.stdout)


def calibrate(url: str, rate: int, script: Path) -> int:
    """Connections for ``rate``: each waits for its answer, then DELAY_MS; two short trials."""
    connections = max(1, round(rate * DELAY_MS / 1000))
    for _ in range(2):
        trial = wrk(url, connections, 3, script)
        connections = max(1, round(connections * rate / (trial.requests / trial.seconds)))
    return connections


def total_shipped(pod: pods.PlayedPod) -> float:
    return sum(shipped(pod).values())


def measure_window(
    pod: pods.PlayedPod,
    groups: dict[str, cgroups.Group],
    rate: int,
    seconds: float,
    script: Path,
    drain_timeout: float,
) -> Window:
    url = pod.url(8080)
    connections = calibrate(url, rate, script)
    quiet(pod)
    start_lines = total_shipped(pod)
    before = {name: cgroups.cpu_seconds(group) for name, group in groups.items()}
    result = wrk(url, connections, seconds, script)
    after = {name: cgroups.cpu_seconds(group) for name, group in groups.items()}
    ended = time.monotonic()
    drain_s: float | None = None
    with suppress(TimeoutError):
        # nginx logs one access line per request (wrk's count leaves out those in flight).
        wait_until(
            lambda: total_shipped(pod) >= start_lines + result.requests,
            timeout=drain_timeout,
            interval=0.5,
            what="every line of the window shipped",
        )
        drain_s = time.monotonic() - ended
    drained = {name: cgroups.cpu_seconds(group) for name, group in groups.items()}
    return Window(
        rate_asked=rate,
        wrk=result,
        connections=connections,
        cpu={name: after[name] - before[name] for name in groups},
        cpu_drain={name: drained[name] - before[name] for name in groups},
        drain_s=drain_s,
        peak={name: cgroups.peak_mib(group) for name, group in groups.items()},
        hwm={name: cgroups.vmhwm_mib(group)[0] for name, group in groups.items()},
        split={name: cgroups.memory_split(group) for name, group in groups.items()},
    )


def quiet(pod: pods.PlayedPod) -> None:
    """Until the shipped count stops moving for a second: the trials' lines are out."""
    seen: list[float] = []

    def still() -> bool:
        seen.append(total_shipped(pod))
        return len(seen) > 1 and seen[-1] == seen[-2]

    wait_until(still, timeout=120, interval=1, what="the trials' lines shipped")


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


Ranked = list[tuple[str, int]]


def top_frames(raw: str, count: int = 12) -> tuple[int, Ranked, Ranked]:
    """py-spy's raw (collapsed) stacks -> samples, the top functions by own time, and the
    project's own functions (sidecars/) by total time (the stdlib's scaffolding, the event loop
    and the thread bootstraps, is on every stack and says nothing)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            name = frame
            if match:
                file = match["file"]
                short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file)
                name = f"{match['func']} ({short})"
            frames.append(name)
        samples += int(n)
        own[frames[-1]] += int(n)
        for name in set(frames):
            if "(sidecars/" in name and not name.startswith(("<module>", "main ")):
                total[name] += int(n)
    return samples, own.most_common(count), total.most_common(count)


def profile(
    engine: Podman, pod: pods.PlayedPod, container: str, rate: int, seconds: float, script: Path
) -> dict:
    """py-spy on the container's process from the host: only samples holding the GIL (--gil),
    i.e. Python running; waits in C (the event loop's epoll, idle worker threads) are left out.
    --nonblocking: the process is never paused (no added latency under the load)."""
    pid = engine.inspect(f"{pod.name}-{container}")["State"]["Pid"]
    out = script.parent / "profile.txt"
    url = pod.url(8080)
    connections = calibrate(url, rate, script)
    spy = subprocess.Popen(
        [
            str(PYSPY),
            "record",
            "--nonblocking",
            "--gil",
            "-r",
            str(PROFILE_RATE),
            "-d",
            f"{int(seconds)}",
            "-p",
            str(pid),
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        load = wrk(url, connections, seconds + 2, script)
        _, err = spy.communicate(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err[-800:]}")
    samples, own, total = top_frames(out.read_text())
    out.unlink()
    return {
        "container": container,
        "rate": load.requests / load.seconds,
        "seconds": seconds,
        "sample_rate": PROFILE_RATE,
        "samples": samples,
        "own": own,
        "total": total,
    }


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="sidecars-pod-tax-"))
    script = root / "pace.lua"
    script.write_text(PACE.format(delay=DELAY_MS))
    engine = Podman.start(root / "engine")
    result: dict = {"load_before": load_before}
    try:
        wanted = images_mod.manifest_images(
            doc for manifest in images_mod.MANIFESTS for doc in variants.load(manifest)
        )
        images_mod.make_images(engine, engine.root / "build", wanted)
        origin = pods.play(engine, pods.ORIGIN_POD)
        try:
            assert origin.play.returncode == 0, origin.play.stderr
            pods.wait_http_ok(origin.url(8090, "/site.tar.gz"), what="the demo origin")
            pod = pods.play(engine, pods.APP_POD, name="pod-tax")
            try:
                assert pod.play.returncode == 0, pod.play.stderr
                pods.wait_http_ok(pod.url(9102, "/readyz"), what="log-shipper /readyz")
                pods.wait_http_ok(pod.url(8080), what="nginx up")
                groups = {
                    name: cgroups.of_pid(engine.inspect(f"{pod.name}-{name}")["State"]["Pid"])
                    for name in CONTAINERS
                }
                result["cgroup_files"] = {n: str(g.cpu) for n, g in groups.items()}
                result["idle_peak"] = {n: cgroups.peak_mib(g) for n, g in groups.items()}
                windows = []
                for rate in args.rates:
                    window = measure_window(
                        pod, groups, rate, args.seconds, script, args.drain_timeout
                    )
                    print(report.window_line(window), file=sys.stderr, flush=True)
                    windows.append(window)
                result["windows"] = windows
                if args.profile_seconds > 0:
                    biggest = max(SIDECARS, key=lambda name: windows[-1].cpu_drain[name])
                    try:
                        result["profile"] = profile(
                            engine, pod, biggest, max(args.rates), args.profile_seconds, script
                        )
                    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                        result["profile_error"] = str(error)
                        print(f"profile skipped: {error}", file=sys.stderr)
            finally:
                engine.down(pod.name)
        finally:
            engine.down(origin.name)
    finally:
        engine.close()
        with suppress(OSError):
            shutil.rmtree(root)
    result["load_after"] = os.getloadavg()
    return result


def main() -> int:
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5000,10000", help="paced req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=25, help="load window per rate")
    parser.add_argument("--drain-timeout", type=float, default=120, help="wait for the shipper")
    parser.add_argument("--profile-seconds", type=float, default=30, help="py-spy; 0: skip")
    parser.add_argument("--wait", type=float, default=1800, help="for other podman runs to end")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    missing = missing_tools() + [t for t in ("wrk",) if shutil.which(t) is None]
    if missing:
        parser.error(f"needs {', '.join(missing)} (bash tests/run --install-only)")
    # A test suite starts podman again between its tests: free means free for 30 s running.
    deadline = time.monotonic() + args.wait
    free_since = time.monotonic()
    while time.monotonic() - free_since < 30:
        if others := other_engines():
            if time.monotonic() > deadline:
                parser.error(f"other podman runs still going: {others}")
            print(f"waiting for other podman runs: {others[:2]}", file=sys.stderr, flush=True)
            free_since = time.monotonic()
        time.sleep(2)
    started = datetime.now(UTC)
    command = "python -m bench.pod_tax.run " + " ".join(sys.argv[1:])
    result = run(args)
    text = report.render(result, started, command.strip())
    print(text)
    if not args.no_write:
        (HERE / "RESULTS.md").write_text(text)
        charts.render(result, started, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
