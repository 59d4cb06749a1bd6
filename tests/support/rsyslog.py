"""A real rsyslogd (Debian's rsyslog + rsyslog-relp) as a plain process on 127.0.0.1 (or on
``address``, e.g. a podman bridge's gateway for senders in a Pod).

Its own config, pid file and work dir under a temp dir; the system's rsyslog service is never
touched. Every message it receives (plain TCP, TLS, RELP) is written to ``received.log``, one
line per message: the input's name, the RFC 5424 header fields and the MSG, separated by
``|``. Its main queue is direct, so an acknowledged RELP message is already in that file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import Proc, free_port, port_open, wait_until

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
# Debian's module dir; RSYSLOG_MODULE_DIR points elsewhere for an unpacked (dpkg -x) rsyslog.
MODULE_DIR = Path(os.environ.get("RSYSLOG_MODULE_DIR", "/usr/lib/x86_64-linux-gnu/rsyslog"))
FIELDS = ("inputname", "hostname", "app-name", "procid", "msgid", "timestamp", "structured-data")


def have_rsyslog() -> bool:
    return os.path.exists(RSYSLOGD)


def have_module(name: str) -> bool:
    return (MODULE_DIR / f"{name}.so").exists()


@dataclass(frozen=True)
class Received:
    input: str  # imtcp or imrelp
    hostname: str
    app_name: str
    procid: str
    msgid: str
    timestamp: str
    structured_data: str
    msg: bytes


@dataclass
class Rsyslog:
    root: Path
    tcp_port: int = field(default_factory=free_port)
    relp_port: int = field(default_factory=free_port)
    tls_port: int | None = None  # set with tls_files to listen for syslog over TLS
    tls_files: tuple[Path, Path, Path] | None = None  # CA, certificate, key
    max_message: int = 4 * 1024 * 1024
    address: str = "127.0.0.1"
    proc: Proc | None = None

    @property
    def output(self) -> Path:
        return self.root / "received.log"

    def render(self) -> Path:
        work = self.root / "work"
        work.mkdir(parents=True, exist_ok=True)
        size = self.max_message
        lines = [
            f'global(workDirectory="{work}" maxMessageSize="{size}"',
            # Keep tabs and other control characters as they are (rsyslog's default is #011).
            '       parser.escapeControlCharactersOnReceive="off")',
            'main_queue(queue.type="Direct")',
            f'module(load="imtcp" maxSessions="20" maxFrameSize="{size}")',
            'module(load="imrelp")',
            'template(name="fields" type="list") {',
            '  property(name="inputname") constant(value="|")',
            '  property(name="hostname") constant(value="|")',
            '  property(name="app-name") constant(value="|")',
            '  property(name="procid") constant(value="|")',
            '  property(name="msgid") constant(value="|")',
            '  property(name="timereported" dateFormat="rfc3339") constant(value="|")',
            '  property(name="structured-data") constant(value="|")',
            '  property(name="msg") constant(value="\\n")',
            "}",
            f'input(type="imtcp" address="{self.address}" port="{self.tcp_port}")',
            f'input(type="imrelp" address="{self.address}" port="{self.relp_port}"'
            f' maxDataSize="{size}")',
        ]
        if self.tls_port is not None and self.tls_files is not None:
            ca, cert, key = self.tls_files
            lines.append(
                f'input(type="imtcp" address="{self.address}" port="{self.tls_port}"'
                ' streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon"'
                f' streamDriver.CAFile="{ca}" streamDriver.CertFile="{cert}"'
                f' streamDriver.KeyFile="{key}")'
            )
        lines.append(f'action(type="omfile" file="{self.output}" template="fields")')
        conf = self.root / "rsyslog.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Rsyslog:
        conf = self.render()
        args = [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")]
        if MODULE_DIR.is_dir():
            args += ["-M", str(MODULE_DIR)]
        self.proc = Proc(args, self.root / "rsyslogd.out")
        ports = [self.tcp_port, self.relp_port] + ([self.tls_port] if self.tls_port else [])

        def listening() -> bool:
            if self.proc is not None and self.proc.popen.poll() is not None:
                raise AssertionError(f"rsyslogd exited: {self.proc.output()}")
            return all(port_open(p, self.address) for p in ports)

        wait_until(listening, timeout=15, what="rsyslogd listening")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all."""
        if self.proc is not None:
            self.proc.popen.kill()
            self.stop()

    def raw_lines(self) -> list[bytes]:
        if not self.output.exists():
            return []
        data = self.output.read_bytes()
        # Only whole lines: rsyslog may be between writes.
        return data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]

    def received(self) -> list[Received]:
        result = []
        for line in self.raw_lines():
            parts = line.split(b"|", len(FIELDS))
            head = [p.decode("utf-8", "replace") for p in parts[: len(FIELDS)]]
            result.append(Received(*head, msg=parts[len(FIELDS)]))
        return result

    def wait_for_count(self, count: int, timeout: float = 30.0) -> list[Received]:
        def enough() -> list[Received] | None:
            got = self.received()
            return got if len(got) >= count else None

        return wait_until(enough, timeout=timeout, what=f"{count} messages at rsyslog")
