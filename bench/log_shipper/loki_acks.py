"""What checkpointing every acknowledged Loki batch costs (issue 9), against the interval
checkpoints the Loki sink had before.

Since issue 9 the Loki sink writes each acknowledgement to the state file (temp + fsync +
rename + directory fsync) before it sends the next batch, so a restart re-sends nothing Loki
acknowledged. Before, it wrote them every --checkpoint-interval, and a restart re-sent up to
that much, which Loki stores again once its head block is cut. Both are run here on the same
code: the "interval" case starts the shipper with the sink's ``deduplicates`` flag set back to
True (a bench-only patch of the class attribute, not a setting).

    .venv/bin/python -m bench.log_shipper.loki_acks                  # prints the table
    .venv/bin/python -m bench.log_shipper.loki_acks --lines 200000 --repeat 1

Each run: a fresh state dir, the same backlog (bench/log_shipper/genlog.py), the shipper's
``loki=`` sink pointed at the benchmark's receiver (fast_sink.py, answers every POST), timed
from the shipper's spawn to the receiver's last request once the shipper reports every line
shipped; CPU seconds from the shipper's rusage; state writes from its own counter.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.request
from pathlib import Path

from bench.log_shipper import genlog
from bench.log_shipper.run import (
    MIB,
    WORK,
    BenchError,
    HttpReceiver,
    fresh,
    post,
    running,
    shipper_cmd,
    wait_for,
)
from tests.support.procs import free_port

# The sink as it was before issue 9: acknowledgements written every --checkpoint-interval.
INTERVAL_PATCH = (
    "import sys; from sidecars.log_shipper.sinks import loki; "
    "loki.LokiSink.deduplicates = True; from sidecars.__main__ import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def metric(port: int, name: str) -> float:
    """The sum of ``name``'s samples; 0 while the shipper is not listening yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def one_run(
    receiver: HttpReceiver, source: Path, lines: int, case: str, extra: list[str]
) -> tuple[float, float, float]:
    """(wall seconds, shipper CPU seconds, state writes)."""
    run_dir = fresh(WORK / "scratch", f"loki-{case}")
    port = free_port()
    cmd = shipper_cmd(
        source, run_dir / "state.json", f"loki={receiver.url}", *extra,
        listen=f"127.0.0.1:{port}",
    )  # fmt: skip
    if case == "interval":
        cmd = [sys.executable, "-c", INTERVAL_PATCH, *cmd[cmd.index("log-shipper") :]]
    post(f"{receiver.url}/reset")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with running(cmd, run_dir / "out.log", env) as child:
        wait_for(
            f"{lines} lines shipped",
            lambda: metric(port, "log_shipper_shipped_lines_total") >= lines,
            child,
            timeout=300,
        )
        writes = metric(port, "log_shipper_state_writes_total")
        last = receiver.stats()["last"]
        cpu, _ = child.finish()
    return last - child.started, cpu, writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-bytes", default="1MiB", help="the shipper's --batch-bytes")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"access-{args.lines}.log"
    if not source.exists():
        tmp = source.with_suffix(".tmp")
        genlog.generate(tmp, args.lines)
        tmp.rename(source)
    nbytes = source.stat().st_size
    (WORK / "scratch").mkdir(parents=True, exist_ok=True)
    receiver = HttpReceiver(WORK / "scratch")
    extra = ["--batch-bytes", args.batch_bytes]
    results: dict[str, list[tuple[float, float, float]]] = {"per-ack": [], "interval": []}
    try:
        for _ in range(args.repeat):
            for case in results:  # round-robin: both see the same machine load
                results[case].append(one_run(receiver, source, args.lines, case, extra))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        receiver.stop()
    print(
        f"{args.lines:,} lines, {nbytes / MIB:.1f} MiB, --batch-bytes {args.batch_bytes}, "
        f"{args.repeat} runs each (median), load average {os.getloadavg()[0]:.2f}"
    )
    print("| Loki acknowledgements | wall s | MiB/s | CPU s | state writes |")
    print("|---|---:|---:|---:|---:|")
    for case, runs in results.items():
        wall, cpu, writes = sorted(runs)[len(runs) // 2]
        print(f"| {case} | {wall:.2f} | {nbytes / MIB / wall:.1f} | {cpu:.2f} | {writes:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
