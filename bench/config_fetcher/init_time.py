"""Init-container cost: wall time from process start to exit and peak RSS of
``sidecars config-fetcher --once``, beside the interpreter's own start-up and import cost and a
shell-script peer (curl + tar + mv), all measured round-robin in the same run."""

from __future__ import annotations

import datetime
import json
import re
import resource
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TIME_BIN = "/usr/bin/time"  # GNU time (Debian package "time"): %M is the peak RSS in KiB


class BenchError(RuntimeError):
    """A measured command failed or produced the wrong output: its numbers would be lies."""


@dataclass
class Command:
    """A command run once per sample, each time into a fresh, empty ``dest``."""

    label: str
    argv: Callable[[Path], list[str]]
    verify: Callable[[Path], None] = lambda dest: None
    env: dict[str, str] | None = None
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + sys, children included
    rss_kib: list[int] = field(default_factory=list)
    # For the fetcher: (spawn -> "started" log, "started" -> "published", "published" -> exit)
    phases: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """The command line as a reader would type it (dest shown as DEST)."""
        return " ".join(_quote(a) for a in self.argv(Path("DEST")))


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _fresh(work: Path, label: str, n: int) -> Path:
    dest = work / f"{re.sub(r'[^a-z0-9]+', '-', label.lower())}-{n}"
    dest.mkdir(parents=True)
    return dest


def _run(cmd: Command, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, env=cmd.env, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{cmd.label}: exit {proc.returncode}: {' | '.join(tail)}")
    return proc


def measure(commands: Sequence[Command], work: Path, runs: int, rss_runs: int) -> None:
    """Round-robin over the commands, so a burst of load from elsewhere on this shared machine
    hits every command alike instead of skewing one of them."""
    for n in range(2):  # warm the page cache and .pyc files; not recorded
        for cmd in commands:
            dest = _fresh(work, cmd.label, -1 - n)
            _run(cmd, cmd.argv(dest))
            cmd.verify(dest)
            shutil.rmtree(dest)
    for n in range(runs):
        for cmd in commands:
            dest = _fresh(work, cmd.label, n)
            argv = cmd.argv(dest)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall_start = time.time()
            started = time.perf_counter()
            proc = _run(cmd, argv)
            cmd.times.append(time.perf_counter() - started)
            wall_end = time.time()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd.cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            cmd.verify(dest)  # every timed run must have published the right bytes
            marks = log_marks(proc.stdout)
            if "started" in marks and "published" in marks:
                cmd.phases.append(
                    (
                        marks["started"] - wall_start,
                        marks["published"] - marks["started"],
                        wall_end - marks["published"],
                    )
                )
            shutil.rmtree(dest)
    # Peak RSS in separate runs under GNU time, so its extra fork never shows in the times.
    for n in range(rss_runs):
        for cmd in commands:
            dest = _fresh(work, cmd.label, runs + n)
            out = work / "time.out"
            _run(cmd, [TIME_BIN, "-f", "%M", "-o", str(out), *cmd.argv(dest)])
            cmd.verify(dest)
            cmd.rss_kib.append(int(out.read_text().split()[-1]))
            shutil.rmtree(dest)


def log_events(stdout: bytes) -> list[tuple[str, float]]:
    """(message, Unix time) of each of the fetcher's JSON log lines (ms resolution)."""
    events = []
    for line in stdout.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
            stamp = datetime.datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        except (ValueError, KeyError, TypeError):
            continue
        events.append((str(event.get("msg")), stamp.replace(tzinfo=datetime.UTC).timestamp()))
    return events


def log_marks(stdout: bytes) -> dict[str, float]:
    """Unix time of the first log line of each message."""
    marks: dict[str, float] = {}
    for msg, stamp in log_events(stdout):
        marks.setdefault(msg, stamp)
    return marks


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_profile(
    argv: Callable[[Path], list[str]], env: dict[str, str], work: Path, runs: int = 5
) -> tuple[float, list[tuple[str, float]]]:
    """Run ``argv`` (a command with ``python -X importtime``) ``runs`` times into fresh
    destinations: (median total import time in s, median self time per top-level package in
    s, largest first). Self times add up without double counting, and a whole run also counts
    what is imported lazily after start-up."""
    totals: list[float] = []
    per_group: dict[str, list[float]] = defaultdict(list)
    for n in range(runs):
        dest = _fresh(work, "importtime", n)
        proc = subprocess.run(argv(dest), env=env, capture_output=True, text=True, check=True)
        shutil.rmtree(dest)
        groups: dict[str, float] = defaultdict(float)
        for line in proc.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match:
                self_us, _, _, name = match.groups()
                groups[_group(name)] += int(self_us) / 1e6
        totals.append(sum(groups.values()))
        for group, seconds in groups.items():
            per_group[group].append(seconds)
    ranked = sorted(
        ((g, statistics.median(v + [0.0] * (runs - len(v)))) for g, v in per_group.items()),
        key=lambda item: -item[1],
    )
    return statistics.median(totals), ranked


def _group(module: str) -> str:
    top = module.split(".", 1)[0]
    if top.startswith("__editable__"):
        return "(editable-install finder)"
    if top == "sidecars":
        return ".".join(module.split(".")[:2])  # sidecars.runtime, sidecars.config_fetcher
    return top


def python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
