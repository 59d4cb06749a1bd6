"""Watch mode: from the moment a new config replaces the old one at the source to the moment the
app nginx answers with it (fetch, verify, publish, debounce, SIGHUP, nginx re-reading its config
and starting new workers), for an HTTP origin and for a ConfigMap-style local directory."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.config_fetcher.content import SITE_CONF, site_conf_version, tar_gz
from bench.config_fetcher.init_time import BenchError, log_events
from tests.support.metrics import scrape
from tests.support.nginx import AppNginx, OriginNginx
from tests.support.procs import Proc, free_port, http_get, wait_until

POLL_S = 0.002  # gap between probes of the app; the latency resolution is about this plus a GET
MISS_AFTER_S = 15.0  # a change not served by then counts as missed


@dataclass
class WatchResult:
    label: str
    command: str
    latencies: list[float] = field(default_factory=list)
    # Unix times of each served change: (source replaced, new value first served)
    windows: list[tuple[float, float]] = field(default_factory=list)
    # Per change: (source replaced -> "published" log, -> "reloaded nginx" log, -> served)
    phases: list[tuple[float, float, float]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    etag_waits: int = 0
    status_kib: dict[str, int] = field(default_factory=dict)  # VmHWM, VmRSS
    counters: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None


def served(port: int, expected: bytes) -> bool:
    # Old workers may still answer, or refuse while nginx swaps them: both mean "not yet".
    with contextlib.suppress(OSError, http.client.HTTPException):
        status, body, _ = http_get(f"http://127.0.0.1:{port}/v", timeout=2)
        return status == 200 and body == expected
    return False


def wait_served(port: int, version: int) -> float | None:
    """perf_counter() at the first answer carrying ``version``; None after MISS_AFTER_S."""
    expected = f"{version}\n".encode()
    deadline = time.perf_counter() + MISS_AFTER_S
    while time.perf_counter() < deadline:
        if served(port, expected):
            return time.perf_counter()
        time.sleep(POLL_S)
    return None


def proc_status_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def fetcher_counters(listen: int) -> dict[str, float]:
    wanted = {
        "config_fetcher_fetches_total": "result",
        "config_fetcher_reloads_total": "result",
    }
    counters: dict[str, float] = {}
    for (name, labels), value in scrape(listen).items():
        if name in wanted:
            label = dict(labels).get(wanted[name], "")
            counters[f"{name}{{{label}}}"] = value
    return counters


def site_env(app: AppNginx, port: int) -> dict[str, str]:
    """What the Pod manifest gives the fetcher for --env-subst of the demo site."""
    return {
        **os.environ,
        "NGINX_PORT": f"127.0.0.1:{port}",
        "SITE_DIR": str(app.site_dir),
        "POD_NAME": "bench-0",
        "POD_NAMESPACE": "bench",
    }


def replace_with_new_etag(
    path: Path, data: bytes, previous: tuple[int, int] | None
) -> tuple[tuple[int, int], bool]:
    """Atomically replace ``path`` at the origin. nginx's ETag for a static file is its mtime in
    whole seconds plus its size, so two versions written within one second with equal sizes get
    the same ETag and the fetcher's If-None-Match is answered 304: the second version would not
    be fetched until the file changes again. When that would happen, wait for the next second
    (and count it), so that the latency measured is the fetcher's, not this collision's."""
    tmp = path.with_name(f".{path.name}.tmp")
    waited = False
    while True:
        tmp.write_bytes(data)
        stat = tmp.stat()
        key = (int(stat.st_mtime), stat.st_size)
        if key != previous:
            break
        waited = True
        time.sleep(max(0.0, key[0] + 1.01 - time.time()))
    os.replace(tmp, path)
    return key, waited


def _run_changes(
    result: WatchResult,
    changes: int,
    port: int,
    change: Callable[[int], None],
    gap: Callable[[], float],
) -> None:
    for version in range(1, changes + 1):
        time.sleep(gap())
        change(version)
        started = time.perf_counter()
        wall = time.time()
        done = wait_served(port, version)
        if done is None:
            result.missed.append(version)
        else:
            result.latencies.append(done - started)
            result.windows.append((wall, wall + done - started))


def _start_watch(
    argv: list[str], log: Path, env: dict[str, str], procs: list[Proc]
) -> tuple[Proc, int]:
    listen = free_port()
    proc = Proc([*argv, "--listen", f"127.0.0.1:{listen}"], log, env=env)
    procs.append(proc)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{listen}/readyz")[0] == 200,
        timeout=30,
        what="fetcher ready",
    )
    return proc, listen


def _finish(result: WatchResult, proc: Proc, listen: int) -> None:
    result.status_kib = proc_status_kib(proc.pid)
    result.counters = fetcher_counters(listen)
    proc.signal(signal.SIGTERM)
    result.exit_code = proc.wait(timeout=30)
    result.phases = split_at_logs(result.windows, proc.log_path.read_bytes())


def split_at_logs(
    windows: list[tuple[float, float]], log: bytes
) -> list[tuple[float, float, float]]:
    """Split each change's latency at the fetcher's "published" and "reloaded nginx" log lines.
    Only when every change gave exactly one of each (no miss, no merged burst) can the n-th
    lines be paired with the n-th change; otherwise no split is claimed."""
    events = [(msg, ts) for msg, ts in log_events(log) if msg in ("published", "reloaded nginx")]
    published = [ts for msg, ts in events if msg == "published"]
    reloaded = [ts for msg, ts in events if msg == "reloaded nginx"]
    if not (len(published) == len(reloaded) == len(windows)):
        return []
    return [
        (pub - start, rel - pub, end - rel)
        for (start, end), pub, rel in zip(windows, published, reloaded, strict=True)
    ]


def http_origin(
    work: Path,
    fetcher: list[str],
    base_conf: str,
    index_html: bytes,
    changes: int,
    interval: float,
    debounce: float,
    seed: int,
) -> WatchResult:
    """Each change is a new .tar.gz at a real origin nginx; the fetcher polls with ETags."""
    origin = OriginNginx(work / "origin")
    app = AppNginx(work / "app")
    procs: list[Proc] = []
    try:
        origin.start()
        app.render()
        port = free_port()
        env = site_env(app, port)
        bundle = origin.docroot / "site.tar.gz"

        def version_bytes(version: int) -> bytes:
            conf = site_conf_version(base_conf, version).encode()
            return tar_gz({SITE_CONF: conf, "html/index.html": index_html})

        etag_key, _ = replace_with_new_etag(bundle, version_bytes(0), None)
        # As in the Pod: the init container publishes, then nginx starts, then the sidecar.
        init = Proc(
            [*fetcher, "--once", "--listen", "off", "--source", origin.url("site.tar.gz"),
             "--dest", str(app.site_dir), "--env-subst"],
            work / "init.log",
            env=env,
        )  # fmt: skip
        procs.append(init)
        if init.wait(timeout=60) != 0:
            raise BenchError(f"init publish failed: {init.output()[-500:]}")
        app.start()
        if wait_served(port, 0) is None:
            raise BenchError("app nginx does not serve version 0")
        argv = [
            *fetcher, "--watch", "--source", origin.url("site.tar.gz"),
            "--dest", str(app.site_dir), "--env-subst", "--reload-pidfile", str(app.pid_file),
            "--interval", f"{interval:g}", "--reload-debounce", f"{debounce:g}",
            "--stale-after", f"{max(30.0, interval * 3):g}",
        ]  # fmt: skip
        proc, listen = _start_watch(argv, work / "watch-http.log", env, procs)
        result = WatchResult(
            f"HTTP origin, --interval {interval:g} --reload-debounce {debounce:g}",
            " ".join(argv[len(fetcher) :]),
        )
        rng = random.Random(seed)

        def change(version: int) -> None:
            nonlocal etag_key
            etag_key, waited = replace_with_new_etag(bundle, version_bytes(version), etag_key)
            result.etag_waits += waited

        # A random gap puts each change at a random point of the fetcher's polling cycle;
        # changing right after the previous reload would always land at the same phase.
        _run_changes(result, changes, port, change, lambda: rng.uniform(0, interval))
        _finish(result, proc, listen)
        return result
    finally:
        for proc in procs:
            proc.stop()
        app.stop()
        origin.stop()


def warm_up(work: Path, fetcher: list[str]) -> None:
    """Start and stop one ``--watch`` on a local directory, health server on, before anything is
    measured: the modules only watch mode imports (watchfiles, anyio, the server) get their
    bytecode cached like everything else, so no measured process pays for compiling them."""
    root = work / "warm-up"
    source = root / "configmap"
    source.mkdir(parents=True)
    kubelet_swap(source, {"a.conf": b"warm-up\n"}, 0)
    procs: list[Proc] = []
    try:
        argv = [
            *fetcher, "--watch", "--source", str(source), "--dest", str(root / "dest"),
            "--interval", "600", "--stale-after", "1200",
        ]  # fmt: skip
        proc, _ = _start_watch(argv, root / "watch.log", dict(os.environ), procs)
        proc.signal(signal.SIGTERM)
        if proc.wait(timeout=30) != 0:
            raise BenchError(f"warm-up --watch exited badly: {proc.output()[-500:]}")
    finally:
        for proc in procs:
            proc.stop()


def kubelet_swap(source: Path, files: dict[str, bytes], version: int) -> None:
    """Update ``source`` the way kubelet updates a mounted ConfigMap: a complete new
    ``..<version>`` directory, one rename of the ``..data`` symlink, then the old one removed."""
    target = source / f"..v{version}"
    target.mkdir()
    for name, data in files.items():
        (target / name).write_bytes(data)
    old = os.readlink(source / "..data") if (source / "..data").is_symlink() else None
    tmp = source / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, source / "..data")
    for name in files:
        link = source / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(source / old)


def local_directory(
    work: Path,
    fetcher: list[str],
    base_conf: str,
    index_html: bytes,
    changes: int,
    debounce: float,
) -> WatchResult:
    """Each change is a ConfigMap-style ``..data`` swap; the fetcher learns of it from file
    notifications (its --interval is set to 600 s so polling cannot be what finds it)."""
    app = AppNginx(work / "app-dir")
    procs: list[Proc] = []
    source = work / "configmap"
    source.mkdir()
    try:
        app.render()
        port = free_port()
        env = site_env(app, port)
        dest = app.site_dir / "conf.d"  # the ConfigMap's files become conf.d/*.conf

        def swap(version: int) -> None:
            conf = site_conf_version(base_conf, version).encode()
            kubelet_swap(source, {"site.conf": conf}, version)

        swap(0)
        (app.site_dir / "html").mkdir(parents=True)
        (app.site_dir / "html" / "index.html").write_bytes(index_html)
        init = Proc(
            [*fetcher, "--once", "--listen", "off", "--source", str(source),
             "--dest", str(dest), "--env-subst"],
            work / "init-dir.log",
            env=env,
        )  # fmt: skip
        procs.append(init)
        if init.wait(timeout=60) != 0:
            raise BenchError(f"init publish failed: {init.output()[-500:]}")
        app.start()
        if wait_served(port, 0) is None:
            raise BenchError("app nginx does not serve version 0")
        argv = [
            *fetcher, "--watch", "--source", str(source), "--dest", str(dest), "--env-subst",
            "--reload-pidfile", str(app.pid_file), "--interval", "600", "--stale-after", "1200",
            "--reload-debounce", f"{debounce:g}",
        ]  # fmt: skip
        proc, listen = _start_watch(argv, work / "watch-dir.log", env, procs)
        result = WatchResult(
            f"local directory (ConfigMap ..data swap), --reload-debounce {debounce:g}",
            " ".join(argv[len(fetcher) :]),
        )
        _run_changes(result, changes, port, swap, lambda: 0.0)
        _finish(result, proc, listen)
        return result
    finally:
        for proc in procs:
            proc.stop()
        app.stop()


@dataclass
class StartupRace:
    trials: int
    settle: float
    unnoticed: int = 0


def startup_race(work: Path, fetcher: list[str], trials: int, settle: float = 2.0) -> StartupRace:
    """How often a ConfigMap swap made the moment the sidecar's /readyz turns 200 goes
    unnoticed. Each trial: an init publish, then ``--watch`` (polling effectively off), wait for
    readiness, swap at once, and see whether the new content is published within ``settle``."""
    race = StartupRace(trials, settle)
    for n in range(trials):
        root = work / f"race-{n}"
        source, dest = root / "configmap", root / "dest"
        source.mkdir(parents=True)
        kubelet_swap(source, {"a.conf": b"0\n"}, 0)
        procs: list[Proc] = []
        try:
            init = Proc(
                [*fetcher, "--once", "--listen", "off", "--source", str(source),
                 "--dest", str(dest)],
                root / "init.log",
            )  # fmt: skip
            procs.append(init)
            if init.wait(timeout=60) != 0:
                raise BenchError(f"init publish failed: {init.output()[-500:]}")
            argv = [
                *fetcher, "--watch", "--source", str(source), "--dest", str(dest),
                "--interval", "600", "--stale-after", "1200",
            ]  # fmt: skip
            _start_watch(argv, root / "watch.log", dict(os.environ), procs)
            kubelet_swap(source, {"a.conf": b"1\n"}, 1)
            deadline = time.perf_counter() + settle
            while (dest / "a.conf").read_bytes() != b"1\n":
                if time.perf_counter() > deadline:
                    race.unnoticed += 1
                    break
                time.sleep(POLL_S)
        finally:
            for proc in procs:
                proc.stop()
    return race
