"""What the benchmark reads: wrk's report (parsed, pure) and a process's CPU time and memory
from /proc."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m)", re.MULTILINE)
_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkReport:
    requests: int
    seconds: float
    percentiles: dict[float, float]  # percent -> seconds
    errors: int  # socket errors plus non-2xx answers

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def parse_wrk(output: str) -> WrkReport:
    total = _TOTAL.search(output)
    if total is None:
        raise ValueError(f"no request count in wrk output: {output[-500:]!r}")
    percentiles = {float(p): float(v) * _UNITS[unit] for p, v, unit in _PERCENTILE.findall(output)}
    errors = sum(int(n) for n in _ERRORS.search(output).groups()) if _ERRORS.search(output) else 0
    non_2xx = _NON_2XX.search(output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return WrkReport(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS[total.group(3)],
        percentiles=percentiles,
        errors=errors,
    )


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB: resident now, and its peak."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]
