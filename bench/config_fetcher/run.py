"""config-fetcher benchmarks: init time, change-to-reload latency, peak RSS.

Run from the repository root (it reuses tests/support to start the real origin and app nginx
from apps/, exactly as the integration tests do):

    python -m bench.config_fetcher.run            # full run, rewrites RESULTS.md's numbers
    python -m bench.config_fetcher.run --runs 5 --changes 10 --no-write   # a quick look

Everything it starts lives in one temp dir and is stopped on exit, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from bench.config_fetcher import content, report
from bench.config_fetcher.init_time import (
    TIME_BIN,
    BenchError,
    Command,
    import_profile,
    measure,
    python_version,
)
from bench.config_fetcher.watch_latency import (
    StartupRace,
    WatchResult,
    http_origin,
    kubelet_swap,
    local_directory,
    startup_race,
    warm_up,
)
from bench.stop import unwind_on_sigterm
from tests.support.nginx import APPS, NGINX, OriginNginx, have_nginx

HERE = Path(__file__).resolve().parent
SECTIONS = ("init", "http", "dir")
# What --env-subst fills into the demo site (the Pod manifest sets the same names).
SITE_VARS = {"NGINX_PORT": "8080", "SITE_DIR": "/srv/site", "POD_NAME": "bench-0"}


def fetcher_command() -> list[str]:
    """The console script beside this interpreter, as the image runs it; else ``-m``."""
    script = Path(sys.executable).with_name("sidecars")
    if script.exists():
        return [str(script), "config-fetcher"]
    return [sys.executable, "-m", "sidecars", "config-fetcher"]


def cache_bytecode(prefix: Path) -> None:
    """Let every Python process started from here cache its bytecode under ``prefix``.

    The image's pip install compiles .pyc files for the package and its dependencies; a
    developer machine with PYTHONDONTWRITEBYTECODE=1 recompiles the project's own modules at
    every start instead (~15-30 ms and, for watch mode's extra modules, ~8 MiB of peak RSS per
    start here), which the image never pays. The warm-up runs fill the cache; nothing is written
    into the source tree."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)


def machine_facts() -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    versions = [f"{d} {version(d)}" for d in ("aiohttp", "watchfiles", "prometheus-client")]
    return [
        f"Machine: nproc {os.cpu_count()}, CPU {cpu}, Linux {platform.release()}",
        f"Python {python_version(sys.executable)}, {nginx.replace('nginx version: ', '')}, "
        + ", ".join(versions),
        "Shared machine: other engineers' work may run at the same time; load average "
        f"(1/5/15 min) at start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def init_commands(
    fetcher: list[str],
    origin: OriginNginx,
    bundle: bytes,
    single: bytes,
    configmap: tuple[Path, dict[str, bytes]],
) -> tuple[list[Command], set[str]]:
    py = sys.executable
    env = {**os.environ, **SITE_VARS}
    assets = {
        name: data
        for name, data in content.archive_files(bundle).items()
        if name.startswith("html/assets/")
    }

    def check_assets(root: Path) -> None:
        for name, data in assets.items():
            if (root / name).read_bytes() != data:
                raise BenchError(f"{root / name} differs from the bundle")

    def verify_bundle(dest: Path) -> None:
        check_assets(dest)
        conf = (dest / content.SITE_CONF).read_text()
        if "${" in conf or "listen 8080;" not in conf:
            raise BenchError(f"{dest / content.SITE_CONF} was not substituted")

    def verify_single(dest: Path) -> None:
        if (dest / "redirects.map").read_bytes() != single:
            raise BenchError(f"{dest / 'redirects.map'} differs from the origin's file")

    cm_source, cm_files = configmap

    def verify_configmap(dest: Path) -> None:
        for name, data in cm_files.items():
            if name.startswith("part-") and (dest / name).read_bytes() != data:
                raise BenchError(f"{dest / name} differs from the ConfigMap")
        if "${" in (dest / "site.conf").read_text():
            raise BenchError(f"{dest / 'site.conf'} was not substituted")

    once = [*fetcher, "--once", "--listen", "off", "--env-subst"]
    bundle_url, single_url = origin.url("site.tar.gz"), origin.url("redirects.map")
    fetch_bundle = "fetcher --once, 1 MiB bundle (.tar.gz)"
    fetch_single = "fetcher --once, 1 MiB single file"
    fetch_configmap = "fetcher --once, 1 MiB local directory (ConfigMap layout)"
    sh_bundle = (
        'set -e; curl -fsS -o "$1/.site.tgz" "$2"; mkdir "$1/.new"; '
        'tar -xzf "$1/.site.tgz" -C "$1/.new"; mv "$1/.new" "$1/site"; rm "$1/.site.tgz"'
    )
    sh_single = 'set -e; curl -fsS -o "$1/.tmp" "$2"; mv "$1/.tmp" "$1/redirects.map"'
    commands = [
        Command("python -c pass (interpreter start)", lambda d: [py, "-c", "pass"]),
        Command("python -c 'import aiohttp'", lambda d: [py, "-c", "import aiohttp"]),
        Command(
            "python -c 'import prometheus_client'", lambda d: [py, "-c", "import prometheus_client"]
        ),
        Command(
            "python -c 'import sidecars.config_fetcher.main'",
            lambda d: [py, "-c", "import sidecars.config_fetcher.main"],
        ),
        Command(
            fetch_bundle,
            lambda d: [*once, "--source", bundle_url, "--dest", str(d)],
            verify_bundle,
            env,
        ),
        Command(
            fetch_single,
            lambda d: [*once, "--source", single_url, "--dest", str(d)],
            verify_single,
            env,
        ),
        Command(
            fetch_configmap,
            lambda d: [*once, "--source", str(cm_source), "--dest", str(d)],
            verify_configmap,
            env,
        ),
        Command(
            "peer: sh curl -o + tar -x + mv, bundle (no checks, no fsync, no env-subst)",
            lambda d: ["sh", "-c", sh_bundle, "sh", str(d), bundle_url],
            lambda d: check_assets(d / "site"),
        ),
        Command(
            "peer: sh curl -o + mv, single file (no checks, no fsync)",
            lambda d: ["sh", "-c", sh_single, "sh", str(d), single_url],
            verify_single,
        ),
    ]
    return commands, {fetch_bundle, fetch_single, fetch_configmap}


def run_init(work: Path, fetcher: list[str], runs: int, rss_runs: int) -> report.InitSection:
    site = content.site_files(APPS / "site")
    bundle = content.bundle_of_size(site, content.MIB)
    single = content.redirect_map(content.MIB)
    unpacked = content.archive_files(bundle)
    cm_files = content.configmap_files(unpacked, content.MIB)
    cm_source = work / "configmap-init"
    cm_source.mkdir()
    kubelet_swap(cm_source, cm_files, 0)
    origin = OriginNginx(work / "origin-init")
    try:
        origin.start()
        (origin.docroot / "site.tar.gz").write_bytes(bundle)
        (origin.docroot / "redirects.map").write_bytes(single)
        commands, fetcher_labels = init_commands(
            fetcher, origin, bundle, single, (cm_source, cm_files)
        )
        measure(commands, work / "init", runs, rss_runs)
        traced = [
            sys.executable, "-X", "importtime", "-m", "sidecars", "config-fetcher", "--once",
            "--listen", "off", "--env-subst", "--source", origin.url("site.tar.gz"), "--dest",
        ]  # fmt: skip
        total, groups = import_profile(
            lambda d: [*traced, str(d)], {**os.environ, **SITE_VARS}, work / "importtime"
        )
    finally:
        origin.stop()
    payloads = [
        f"bundle: `site.tar.gz`, {len(bundle):,} bytes as fetched, {len(unpacked)} files, "
        f"{sum(map(len, unpacked.values())):,} bytes unpacked (apps/site plus 16 base64 text "
        "assets that gzip cannot shrink much), published with `--env-subst` as the Pod "
        "manifest does",
        f"single file: `redirects.map`, {len(single):,} bytes (an nginx map of redirects)",
        f"local directory: the bundle's files as a mounted ConfigMap holds them (flat keys, "
        f"`..data` symlink), cut to {sum(map(len, cm_files.values())):,} bytes in "
        f"{len(cm_files)} files, the most a ConfigMap can hold",
        "origin: apps/origin/nginx.conf on 127.0.0.1 (tests/support/nginx.py)",
    ]
    shown = " ".join(traced[1:]).replace(origin.url(""), "http://127.0.0.1:PORT/") + " DEST"
    return report.InitSection(commands, fetcher_labels, payloads, f"python {shown}", total, groups)


def main(argv: list[str] | None = None) -> int:
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per init command")
    parser.add_argument("--rss-runs", type=int, default=5, help="GNU time runs per command")
    parser.add_argument("--changes", type=int, default=100, help="changes per watch benchmark")
    parser.add_argument("--interval", type=float, default=1.0, help="--interval of HTTP watch")
    parser.add_argument("--debounce", type=float, default=0.1, help="--reload-debounce")
    parser.add_argument(
        "--race-trials", type=int, default=20, help="watch starts probed for the startup race"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the gaps between changes")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (process logs) for inspection"
    )
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := only - set(SECTIONS):
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; one of {SECTIONS}")
    if not have_nginx():
        parser.error(f"nginx not found at {NGINX} (apt-get install nginx-light)")
    if "init" in only and not os.path.exists(TIME_BIN):
        parser.error(f"{TIME_BIN} not found (apt-get install time)")

    shown = "python -m bench.config_fetcher.run" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    fetcher = fetcher_command()
    started = datetime.datetime.now(datetime.UTC)
    head = report.Header(
        command=shown,
        date=started.strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine_facts(),
        fetcher=" ".join(fetcher),
    )
    parts: list[list[str]] = [report.header(head)]
    watch: list[WatchResult] = []
    race: StartupRace | None = None
    base_conf = (APPS / "site" / "conf.d" / "site.conf").read_text()
    index_html = (APPS / "site" / "html" / "index.html").read_bytes()
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="bench-cf-"))
            print(f"keeping {work}", file=sys.stderr)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cf-")))
        cache_bytecode(work / "pycache")
        try:
            if only & {"http", "dir"}:
                warm_up(work, fetcher)
            init: report.InitSection | None = None
            if "init" in only:
                init = run_init(work, fetcher, args.runs, args.rss_runs)
            if "http" in only:
                watch.append(
                    http_origin(
                        work, fetcher, base_conf, index_html, args.changes, args.interval,
                        args.debounce, args.seed,
                    )
                )  # fmt: skip
            if "dir" in only:
                watch.append(
                    local_directory(
                        work, fetcher, base_conf, index_html, args.changes, args.debounce
                    )
                )
                race = startup_race(work, fetcher, args.race_trials)
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    if init is not None:
        parts.append(report.init_section(init, args.runs))
    if watch:
        parts.append(report.watch_section(watch, args.interval, race))
    parts.append(
        report.rss_section(
            init.commands if init else [], init.fetcher_labels if init else set(), watch
        )
    )
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    elapsed = datetime.datetime.now(datetime.UTC) - started
    parts.append([f"Load average at the end: {load}; the run took {elapsed.seconds} s."])
    block = report.render(parts)
    print(block)
    if not args.no_write:
        report.splice_into(args.results, block, "config-fetcher benchmarks: results")
        print(f"written to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
