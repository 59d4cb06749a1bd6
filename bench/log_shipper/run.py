"""log-shipper throughput, peak RSS and CPU, side by side with syslog-ng and rsyslog.

Run from the repository root, with the project's venv (``bash tests/run --install-only`` makes
it) so the interpreter is set up like the image's; this machine's base interpreter also loads a
site hook of the sandbox that adds memory to every Python process:

    .venv/bin/python -m bench.log_shipper.run       # full run, rewrites RESULTS.md's numbers
    python -m bench.log_shipper.run --repeat 1 --backlog-gib 0 --no-write   # a quick look
    python -m bench.log_shipper.run --only http     # sections: http, relp, syslog, backlog

Each case starts its shipper on a file that is already complete (a backlog), and is timed from
the shipper's spawn to the moment its receiver holds every line (for the HTTP sink: the end of
the last request, read from the receiver's CLOCK_MONOTONIC stamp; for rsyslog: the output file
reaching the source's size, polled every 20 ms). CPU seconds and peak RSS come from the
process's own rusage (``wait4`` after SIGTERM). Everything lives under bench/.work/log_shipper/
(generated logs are kept between runs; nothing there is committed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.log_shipper import charts, genlog, peers, report
from bench.stop import unwind_on_sigterm
from tests.support.procs import free_port, port_open

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "bench" / ".work" / "log_shipper"
SECTIONS = ("http", "relp", "syslog", "backlog")
MIB = 1024 * 1024


# The shipper parsing as in the Pod (LOG_SHIPPER_FORMAT=sidecars), and detecting the format.
PARSING_POD = "log-shipper --format sidecars (parsing, as in the Pod)"
PARSING_AUTO = "log-shipper --format auto (detects sidecars)"


class BenchError(RuntimeError):
    pass


@dataclass
class Run:
    case: str
    tool: str
    wall: float
    lines: int
    nbytes: int
    cpu: float
    maxrss_kib: int
    receiver_cpu: float | None = None
    wire_bytes: int | None = None
    # (seconds since spawn, VmRSS in MiB) sampled every RSS_EVERY seconds while it ran
    rss_series: list[tuple[float, float]] = field(default_factory=list)

    @property
    def mib_s(self) -> float:
        return self.nbytes / MIB / self.wall

    @property
    def lines_s(self) -> float:
        return self.lines / self.wall


@dataclass
class Case:
    name: str
    tool: str
    runs: list[Run] = field(default_factory=list)

    def median(self) -> Run:
        ordered = sorted(self.runs, key=lambda r: r.wall)
        return ordered[len(ordered) // 2]


# --- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    popen: subprocess.Popen[bytes]
    started: float
    log: Path

    def finish(self) -> tuple[float, int]:
        """SIGTERM the process group; its own CPU seconds and peak RSS (KiB)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return usage.ru_utime + usage.ru_stime, usage.ru_maxrss
            if time.monotonic() > deadline:
                os.killpg(self.popen.pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
            time.sleep(0.02)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.popen.args[0]} exited {self.popen.returncode}:\n{tail}")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    started = time.monotonic()
    with log.open("ab") as out:
        popen = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
    return Child(popen, started, log)


@contextlib.contextmanager
def running(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Child]:
    child = spawn(cmd, log, env)
    try:
        yield child
    finally:
        if child.popen.returncode is None:
            child.finish()


def wait_for(
    what: str, done: Callable[[], bool], child: Child, timeout: float, interval: float = 0.02
) -> float:
    """Poll until ``done()``; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not done():
        child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).read()


def shipper_cmd(
    source: Path, state: Path, sink: str, *extra: str, listen: str = "off", fmt: str = "none"
) -> list[str]:
    """``listen``: "off" like the peers (no health server), or HOST:PORT as in a Pod.
    ``fmt``: --format; the Pod parses (LOG_SHIPPER_FORMAT=sidecars), the peers do not."""
    script = Path(sys.executable).with_name("sidecars")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "sidecars"]
    # --format none: the peers ship raw lines, and so did the shipper's default before format
    # detection (--format auto) became the default; the results compare like with like.
    return [
        *head, "log-shipper", "--paths", str(source), "--state-file", str(state),
        "--sink", sink, "--listen", listen, "--log-level", "warning", "--format", fmt, *extra,
    ]  # fmt: skip


RSS_EVERY = 0.1  # seconds between VmRSS samples


class RssSampler:
    """VmRSS of the sending process (syslog-ng: its only process) over time, on a thread."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.series: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        status = Path(f"/proc/{self.child.popen.pid}/status")
        while not self._done.wait(RSS_EVERY):
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    at = time.monotonic() - self.child.started
                    self.series.append((at, int(line.split()[1]) / 1024))
                    break

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- receivers ------------------------------------------------------------------------------


class HttpReceiver:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.child = spawn(
            [sys.executable, "-m", "bench.log_shipper.fast_sink", str(self.port)],
            work / "fast_sink.out",
        )
        wait_for("fast sink", lambda: port_open(self.port), self.child, 20)
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        return get_json(f"{self.url}/stats")

    def measure(self, case: str, tool: str, cmd: list[str], env, lines: int, nbytes: int, log):
        post(f"{self.url}/reset")
        before = self.stats()["cpu"]
        with running(cmd, log, env) as child, RssSampler(child) as sampler:
            wait_for(
                f"{lines} records at the HTTP receiver",
                lambda: self.stats()["records"] >= lines,
                child,
                timeout=max(120, nbytes / MIB),
            )
            stats = self.stats()
            sampler.stop()
            cpu, rss = child.finish()
        if stats["records"] != lines:
            raise BenchError(f"{tool}: {stats['records']} records arrived, expected {lines}")
        return Run(
            case, tool, stats["last"] - child.started, lines, nbytes, cpu, rss,
            receiver_cpu=stats["cpu"] - before, wire_bytes=stats["body_bytes"],
            rss_series=sampler.series,
        )  # fmt: skip

    def stop(self) -> None:
        self.child.finish()


class RsyslogReceiver:
    """A fresh rsyslogd per run (same ports), so each run's output file is new."""

    def __init__(self, work: Path) -> None:
        self.work = work / "receiver"
        self.relp_port, self.tcp_port = free_port(), free_port()
        self.runs = 0

    def _start(self) -> tuple[Child, Path]:
        self.runs += 1
        run_dir = self.work / f"run-{self.runs}"
        run_dir.mkdir(parents=True, exist_ok=True)
        output = run_dir / "received.log"
        conf = run_dir / "rsyslog.conf"
        conf.write_text(peers.receiver_conf(run_dir, self.relp_port, self.tcp_port, output))
        child = spawn(peers.rsyslog_command(conf, run_dir), run_dir / "rsyslogd.out")
        wait_for(
            "receiving rsyslogd",
            lambda: port_open(self.relp_port) and port_open(self.tcp_port),
            child,
            20,
        )
        return child, output

    def measure(self, case: str, tool: str, cmd: list[str], env, lines: int, nbytes: int, log):
        server, output = self._start()

        def size() -> int:
            try:
                return output.stat().st_size
            except FileNotFoundError:
                return 0

        try:
            with running(cmd, log, env) as child:
                end = wait_for(
                    f"{nbytes} bytes at rsyslog",
                    lambda: size() >= nbytes,
                    child,
                    timeout=max(120, nbytes / MIB * 2),
                )
                cpu, rss = child.finish()
        finally:
            receiver_cpu, _ = server.finish()
        if size() != nbytes:
            raise BenchError(f"{tool}: rsyslog wrote {size()} bytes, the source has {nbytes}")
        # Count once at the end: the size matched, the line count must too.
        with output.open("rb") as handle:
            count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(MIB), b""))
        output.unlink()
        if count != lines:
            raise BenchError(f"{tool}: {count} lines at rsyslog, expected {lines}")
        return Run(
            case, tool, end - child.started, lines, nbytes, cpu, rss, receiver_cpu=receiver_cpu
        )

    def stop(self) -> None:
        pass


# --- the cases ------------------------------------------------------------------------------


def fresh(work: Path, name: str) -> Path:
    """A clean state dir per run, so every run starts from offset 0."""
    path = work / "runs" / name
    if path.exists():
        for item in sorted(path.rglob("*"), reverse=True):
            item.unlink() if not item.is_dir() or item.is_symlink() else item.rmdir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def http_cases(work: Path, source: Path, lines: int, nbytes: int, repeat: int) -> list[Case]:
    sng = peers.syslog_ng(WORK / "syslog-ng")
    receiver = HttpReceiver(work)
    url = f"{receiver.url}/ingest"
    variants: list[tuple[Case, Callable[[Path], tuple[list[str], dict[str, str] | None]]]] = [
        (
            Case("file -> HTTP", "log-shipper (gzip 1, 1 MiB batches; defaults)"),
            lambda d: (shipper_cmd(source, d / "state.json", f"http={url}"), None),
        ),
        (
            Case("file -> HTTP", "log-shipper (no gzip, 1 MiB batches)"),
            lambda d: (
                shipper_cmd(source, d / "state.json", f"http={url}", "--gzip-level", "0"),
                None,
            ),
        ),
        (
            Case("file -> HTTP", PARSING_POD),
            lambda d: (shipper_cmd(source, d / "state.json", f"http={url}", fmt="sidecars"), None),
        ),
        (
            Case("file -> HTTP", PARSING_AUTO),
            lambda d: (shipper_cmd(source, d / "state.json", f"http={url}", fmt="auto"), None),
        ),
        (
            Case("file -> HTTP", "syslog-ng http() (1 MiB batches, 2 workers)"),
            lambda d: _sng(sng, d, peers.syslog_ng_http_conf(source, url, MIB, 2)),
        ),
        (
            Case("file -> HTTP", "syslog-ng http() (4 MiB batches, 4 workers)"),
            lambda d: _sng(sng, d, peers.syslog_ng_http_conf(source, url, 4 * MIB, 4)),
        ),
    ]
    try:
        return _rounds(variants, receiver, work, lines, nbytes, repeat)
    finally:
        receiver.stop()


def _sng(sng: peers.SyslogNg, run_dir: Path, conf_text: str) -> tuple[list[str], dict]:
    conf = run_dir / "syslog-ng.conf"
    conf.write_text(conf_text)
    return sng.command(conf, run_dir), sng.env()


def _rounds(variants, receiver, work: Path, lines: int, nbytes: int, repeat: int) -> list[Case]:
    # Round-robin, so a burst of load from elsewhere hits every tool alike.
    for attempt in range(repeat):
        for index, (case, build) in enumerate(variants):
            run_dir = fresh(work, f"{case.name.split()[-1].lower()}-{index}")
            cmd, env = build(run_dir)
            run = receiver.measure(
                case.name, case.tool, cmd, env, lines, nbytes, run_dir / "out.log"
            )
            case.runs.append(run)
            print(
                f"  {case.tool:<48} run {attempt + 1}: {run.wall:6.2f} s {run.mib_s:6.1f} MiB/s "
                f"{run.lines_s:>9,.0f} lines/s cpu {run.cpu:5.2f} s "
                f"rss {run.maxrss_kib / 1024:.0f} MiB",
                flush=True,
            )
    return [case for case, _ in variants]


def relp_cases(work: Path, source: Path, lines: int, nbytes: int, repeat: int) -> list[Case]:
    receiver = RsyslogReceiver(work)
    target = f"127.0.0.1:{receiver.relp_port}"
    variants = [
        (
            Case("file -> RELP", "log-shipper (RELP window 128; defaults)"),
            lambda d: (shipper_cmd(source, d / "state.json", f"relp={target}"), None),
        ),
        (
            Case("file -> RELP", "rsyslog imfile -> omrelp (window 1024)"),
            lambda d: _rsyslog_sender(d, source, receiver.relp_port),
        ),
    ]
    try:
        return _rounds(variants, receiver, work, lines, nbytes, repeat)
    finally:
        receiver.stop()


def _rsyslog_sender(run_dir: Path, source: Path, port: int) -> tuple[list[str], None]:
    conf = run_dir / "sender.conf"
    conf.write_text(peers.rsyslog_relp_sender_conf(run_dir, source, port))
    return peers.rsyslog_command(conf, run_dir), None


def syslog_cases(work: Path, source: Path, lines: int, nbytes: int, repeat: int) -> list[Case]:
    sng = peers.syslog_ng(WORK / "syslog-ng")
    receiver = RsyslogReceiver(work)
    variants = [
        (
            Case("file -> syslog/TCP", "log-shipper (RFC 5424, octet counting)"),
            lambda d: (
                shipper_cmd(
                    source, d / "state.json", f"syslog=tcp://127.0.0.1:{receiver.tcp_port}"
                ),
                None,
            ),
        ),
        (
            Case("file -> syslog/TCP", "syslog-ng syslog() (RFC 5424, octet counting)"),
            lambda d: _sng(sng, d, peers.syslog_ng_syslog_conf(source, receiver.tcp_port)),
        ),
    ]
    try:
        return _rounds(variants, receiver, work, lines, nbytes, repeat)
    finally:
        receiver.stop()


def backlog_cases(work: Path, source: Path, gib: float, repeat: int = 1) -> list[Case]:
    big = WORK / f"backlog-{gib:g}GiB.log"
    target = int(gib * 1024 * MIB)
    meta = big.with_suffix(".json")
    if not big.exists() or not meta.exists() or json.loads(meta.read_text())["bytes"] < target:
        print(f"building {big.name} from copies of {source.name} ...", flush=True)
        nbytes, lines = genlog.grow_to(source, big, target)
        meta.write_text(json.dumps({"bytes": nbytes, "lines": lines}))
    info = json.loads(meta.read_text())
    sng = peers.syslog_ng(WORK / "syslog-ng")
    receiver = HttpReceiver(work)
    url = f"{receiver.url}/ingest"
    variants = [
        (
            Case(f"{gib:g} GiB backlog -> HTTP", "log-shipper (defaults)"),
            lambda d: (shipper_cmd(big, d / "state.json", f"http={url}"), None),
        ),
        (
            # The receiver shares the 2 cores: without gzip it does not spend them gunzipping.
            Case(f"{gib:g} GiB backlog -> HTTP", "log-shipper (no gzip)"),
            lambda d: (
                shipper_cmd(big, d / "state.json", f"http={url}", "--gzip-level", "0"),
                None,
            ),
        ),
        (
            # As in a Pod: serving /healthz, /readyz and /metrics (aiohttp's server loaded).
            Case(f"{gib:g} GiB backlog -> HTTP", "log-shipper (defaults, --listen on)"),
            lambda d: (
                shipper_cmd(
                    big, d / "state.json", f"http={url}", listen=f"127.0.0.1:{free_port()}"
                ),
                None,
            ),
        ),
        (
            Case(f"{gib:g} GiB backlog -> HTTP", PARSING_POD),
            lambda d: (shipper_cmd(big, d / "state.json", f"http={url}", fmt="sidecars"), None),
        ),
        (
            Case(f"{gib:g} GiB backlog -> HTTP", PARSING_AUTO),
            lambda d: (shipper_cmd(big, d / "state.json", f"http={url}", fmt="auto"), None),
        ),
        (
            Case(f"{gib:g} GiB backlog -> HTTP", "syslog-ng http() (1 MiB batches, 2 workers)"),
            lambda d: _sng(sng, d, peers.syslog_ng_http_conf(big, url, MIB, 2)),
        ),
    ]
    try:
        return _rounds(variants, receiver, work, info["lines"], info["bytes"], repeat)
    finally:
        receiver.stop()


# --- main -----------------------------------------------------------------------------------


def idle_rss_mb(work: Path, listen: str = "off") -> float:
    """The shipper's RSS once started with nothing to ship (interpreter, imports, threads):
    what the drain's peak RSS is measured on top of."""
    run_dir = fresh(work, "idle")
    empty = run_dir / "empty.log"
    empty.write_bytes(b"")
    cmd = shipper_cmd(
        empty, run_dir / "state.json", "http=http://127.0.0.1:9/ingest", listen=listen
    )
    with running(cmd, run_dir / "out.log") as child:
        status = Path(f"/proc/{child.popen.pid}/status")
        wait_for("start-up", lambda: (run_dir / "state.json").exists(), child, 30)
        time.sleep(1.0)  # settled: watcher thread up, first poll done
        child.check_alive()
        rss_kib = next(
            int(line.split()[1])
            for line in status.read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    return rss_kib * 1024 / 1e6


def machine_facts(sng_version: str | None) -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rsyslog = subprocess.run([peers.RSYSLOGD, "-v"], capture_output=True, text=True).stdout
    return [
        f"Machine: nproc {os.cpu_count()}, CPU {cpu}, Linux {platform.release()}",
        f"Python {platform.python_version()} ({sys.executable}); "
        f"{sng_version or 'syslog-ng not used'}; "
        f"{rsyslog.split(' compiled')[0].strip() if rsyslog else 'rsyslogd not found'}",
        "Shared machine: other engineers' work may run at the same time; load average "
        f"(1/5/15 min) at start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def main(argv: list[str] | None = None) -> int:
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (median shown)")
    parser.add_argument("--backlog-gib", type=float, default=1.0, help="0 skips the backlog")
    parser.add_argument("--backlog-repeat", type=int, default=1, help="backlog runs per tool")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; of {', '.join(SECTIONS)}")
    if args.backlog_gib <= 0 and "backlog" in only:
        only.remove("backlog")

    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"access-{args.lines}.log"
    if not source.exists():
        print(f"generating {source.name} ({args.lines:,} lines) ...", flush=True)
        tmp = source.with_suffix(".tmp")
        genlog.generate(tmp, args.lines)
        tmp.rename(source)
    nbytes = source.stat().st_size
    sng_version = None
    if {"http", "syslog", "backlog"} & set(only):
        sng_version = peers.syslog_ng(WORK / "syslog-ng").version
    executable = Path(sys.executable)
    python = executable.relative_to(REPO) if executable.is_relative_to(REPO) else "python"
    command = f"{python} -m bench.log_shipper.run " + shlex.join(argv or sys.argv[1:])
    header = report.Header(
        command=command.strip(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine_facts(sng_version),
        source=f"{args.lines:,} lines, {nbytes / MIB:.1f} MiB ({nbytes / args.lines:.0f} B/line)",
    )
    idle = idle_rss_mb(WORK / "scratch")
    serving = idle_rss_mb(WORK / "scratch", listen=f"127.0.0.1:{free_port()}")
    header.machine.append(
        f"log-shipper RSS after start-up with nothing to ship: {idle:.1f} MB with --listen off "
        f"as in the runs below, {serving:.1f} MB serving /metrics (the drain's peak RSS includes "
        "it)"
    )
    for line in header.machine:
        print(line)
    cases: list[Case] = []
    work = WORK / "scratch"
    work.mkdir(parents=True, exist_ok=True)
    for section in only:
        print(f"[{section}]", flush=True)
        if section == "http":
            cases += http_cases(work, source, args.lines, nbytes, args.repeat)
        elif section == "relp":
            if not peers.have_rsyslog_relp():
                print("  skipped: rsyslogd with imrelp is not installed (rsyslog-relp)")
                continue
            cases += relp_cases(work, source, args.lines, nbytes, args.repeat)
        elif section == "syslog":
            cases += syslog_cases(work, source, args.lines, nbytes, args.repeat)
        elif section == "backlog":
            cases += backlog_cases(work, source, args.backlog_gib, args.backlog_repeat)
    text = report.render(header, [(c.name, c.tool, c.median(), len(c.runs)) for c in cases])
    print(text)
    if not args.no_write:
        report.splice_into(HERE / "RESULTS.md", text)
        print(f"wrote {HERE / 'RESULTS.md'}")
        caption = [f"{header.date}: {header.command}", *header.machine[:3]]
        for path in charts.render(cases, caption):
            print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, peers.PeerError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
