"""Hostile input against the real process (`python -m sidecars inject`), each answered by exit 2
and one line, or by a bounded memory peak:

- nesting deeper than the parser's recursion: exit 2 (not a traceback)
- bytes that are not UTF-8: exit 2 naming the byte
- an endless stream: refused past MAX_INPUT_BYTES, not read whole into memory
- a billion-laughs document (aliases of aliases): the round-trip parse keeps aliases as shared
  nodes, so the peak RSS stays that of a small manifest
- a copied or hand-edited marker annotation naming the user's containers: refused, so
  re-injection never deletes what it did not add
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sidecars.inject.main import MAX_INPUT_BYTES
from tests.unit.inject.test_golden import CORPUS

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENT = (CORPUS / "classic.yaml").read_text()


# `python -m sidecars inject ...`, reporting its VmHWM at exit from /proc/self/status (a
# forked child's wait4 ru_maxrss would count the test process it was forked from).
_WRAP = """
import sys
from sidecars.__main__ import main
out, sys.argv = sys.argv[1], ["sidecars", *sys.argv[2:]]
try:
    code = main()
finally:
    status = open("/proc/self/status").read().splitlines()
    open(out, "w").write(next(l for l in status if l.startswith("VmHWM:")).split()[1])
sys.exit(code)
"""


def run(
    stdin: bytes | Path, *args: str, tmp: Path, timeout: float = 120
) -> tuple[int, bytes, str, int]:
    """Exit code, stdout, stderr and peak RSS in KiB of a real `sidecars inject` process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    source = stdin if isinstance(stdin, Path) else tmp / "in"
    if not isinstance(stdin, Path):
        source.write_bytes(stdin)
    hwm = tmp / "hwm"
    with open(source, "rb") as i:
        done = subprocess.run(
            [sys.executable, "-c", _WRAP, str(hwm), "inject", *args],
            stdin=i,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    return done.returncode, done.stdout, done.stderr.decode(), int(hwm.read_text())


def test_a_normal_run_through_the_console_entry(tmp_path: Path) -> None:
    code, out, err, _ = run(DEPLOYMENT.encode(), tmp=tmp_path)
    assert code == 0, err
    assert b"name: config-fetcher-init" in out
    assert err == (
        "document 1: Deployment/web: injected config-fetcher, metrics-proxy, log-shipper "
        "(native sidecars), with ConfigMap/web-sidecars-nginx before it; warning: nginx does not "
        "run as UID 101, so the sidecars cannot signal it (reload, log reopening after "
        "rotation): set its runAsUser\n"
    )


def test_nesting_too_deep(tmp_path: Path) -> None:
    code, out, err, _ = run(b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", tmp=tmp_path)
    assert (code, out) == (2, b"")
    assert (
        err
        == "sidecars inject: document 1, line 1: broken YAML: nested more than 100 levels deep\n"
    )


def test_deep_nesting_inside_a_workload(tmp_path: Path) -> None:
    # Block nesting (indentation), which the parser handles fast but loading recurses on.
    text = (
        DEPLOYMENT
        + "          args:\n"
        + "".join(" " * (12 + 2 * i) + f"k{i}:\n" for i in range(400))
        + " " * 812
        + "end: 1\n"
    )
    code, out, err, _ = run(text.encode(), tmp=tmp_path)
    assert (code, out) == (2, b"")
    assert "nested more than 100 levels deep" in err and err.count("\n") == 1


def test_not_utf8(tmp_path: Path) -> None:
    code, out, err, _ = run(b"apiVersion: v1\nkind: ConfigMap\ndata: {a: \xff\xfe}\n", tmp=tmp_path)
    assert (code, out) == (2, b"")
    assert err == "sidecars inject: stdin: not UTF-8 (byte 41)\n"


def test_more_than_the_input_bound_is_refused(tmp_path: Path) -> None:
    _, _, _, baseline = run(DEPLOYMENT.encode(), tmp=tmp_path)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:  # 4 times the bound
        for _ in range(4 * MAX_INPUT_BYTES // 2**20):
            f.write((b"# " + b"x" * 1021 + b"\n") * 1024)
    code, out, err, peak = run(big, tmp=tmp_path)
    assert (code, out) == (2, b"")
    limit = MAX_INPUT_BYTES // 2**20
    assert err == f"sidecars inject: stdin: more than {limit} MiB of manifests\n"
    # What it holds is the bound's worth (once, plus a copy at most), not the whole stream.
    assert peak < baseline + 2 * MAX_INPUT_BYTES // 1024, f"peak {peak} KiB, {baseline} small"


def laughs(levels: int) -> str:
    lines = ['  l0: &l0 "lol"']
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 10)
        lines.append(f"  l{i}: &l{i} [{refs}]")
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: laughs\n"
        "spec:\n  containers:\n    - name: nginx\n      image: nginx\n"
        "x-laughs:\n" + "\n".join(lines) + "\n"
    )


def test_billion_laughs_is_not_expanded(tmp_path: Path) -> None:
    # 10 levels: 10**9 strings if expanded. x-laughs is no Pod field (the schema is not the
    # point here, memory is); the injected Pod is written back with the aliases as aliases.
    small_code, _, _, small = run(laughs(2).encode(), tmp=tmp_path)
    code, out, err, peak = run(laughs(10).encode(), tmp=tmp_path)
    assert (small_code, code) == (0, 0), err
    assert b"*l8" in out and b"name: log-shipper" in out
    assert peak < small + 20 * 1024, f"peak RSS {peak} KiB vs {small} KiB for a small Pod"


def test_a_copied_marker_cannot_make_it_delete_the_users_containers(tmp_path: Path) -> None:
    code, out, _, _ = run(DEPLOYMENT.encode(), tmp=tmp_path)
    assert code == 0
    forged = out.replace(b'"containers":[]', b'"containers":["nginx"]')
    assert forged != out
    code, out, err, _ = run(forged, tmp=tmp_path)
    assert (code, out) == (2, b"")
    assert "annotation sidecars.inject/status names containers ['nginx'], not all added" in err


def _inject_into(stdout: int, tmp: Path) -> subprocess.CompletedProcess:
    source = tmp / "in.yaml"
    source.write_text(DEPLOYMENT)
    return subprocess.run(
        [sys.executable, "-m", "sidecars", "inject", "-f", str(source)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


def test_a_reader_that_went_away_is_no_traceback(tmp_path: Path) -> None:
    # `sidecars inject ... | head -1`: the pipe's reader is gone before the output is written.
    read, write = os.pipe()
    os.close(read)
    try:
        done = _inject_into(write, tmp_path)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == b"", done.stderr.decode()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        done = _inject_into(full.fileno(), tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.decode()
        == "sidecars inject: cannot write the output: No space left on device\n"
    )
