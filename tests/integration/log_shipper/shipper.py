"""The integration tests' handle on a real ``python -m sidecars log-shipper`` process."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import Proc, free_port, http_get, port_open, sidecars_cmd, wait_until

REPO = Path(__file__).resolve().parents[3]


class Shipper:
    def __init__(
        self,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        state_file: Path | None = None,
    ) -> None:
        """``prefix``: a command the shipper runs under (e.g. setpriv dropping capabilities);
        ``state_file``: elsewhere than in ``root`` (e.g. on a volume of its own)."""
        self.root = root
        self._state_file = state_file
        self.args = list(args)
        self.env = env
        self.prefix = list(prefix)
        self.port = free_port()
        self.proc: Proc | None = None
        self.runs = 0

    @property
    def state_file(self) -> Path:
        return self._state_file or self.root / "state.json"

    def start(self) -> Shipper:
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        cmd = self.prefix + sidecars_cmd(
            "log-shipper",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state-file",
            str(self.state_file),
            *self.args,
        )
        env = {**os.environ, **(self.env or {})}
        self.proc = Proc(cmd, self.root / f"shipper-{self.runs}.out", env=env, cwd=REPO)
        wait_until(
            lambda: port_open(self.port) or self.proc.popen.poll() is not None,  # type: ignore[union-attr]
            timeout=15,
            what="log-shipper health port",
        )
        assert self.proc.popen.poll() is None, self.output()
        return self

    def output(self) -> str:
        return "".join(
            (self.root / f"shipper-{run}.out").read_text(errors="replace")
            for run in range(1, self.runs + 1)
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stop()
        self.proc = None

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc.stop()
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def metrics(self) -> str:
        status, body, _ = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200
        return body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(4))
        return total
