"""The peers and receivers of the log-shipper benchmark, from Debian's packages.

- syslog-ng (``syslog-ng-core`` + ``syslog-ng-mod-http``) conflicts with rsyslog in apt, so
  unless it is installed it is fetched with ``apt-get download`` (the machine's own apt
  sources) and unpacked with ``dpkg -x`` under bench/.work/, then run from there.
- rsyslogd (``rsyslog`` + ``rsyslog-relp``) is the RELP and syslog receiver, and with imfile +
  omrelp also the RELP sending peer: syslog-ng has no RELP.
Every daemon runs as a plain process with its config, pid and state files in a work dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
RSYSLOG_MODULES = Path("/usr/lib/x86_64-linux-gnu/rsyslog")
SYSLOG_NG_PACKAGES = ("syslog-ng-core", "syslog-ng-mod-http")


class PeerError(RuntimeError):
    """A peer cannot be set up; the message says what is missing."""


@dataclass(frozen=True)
class SyslogNg:
    binary: Path
    module_path: Path | None
    library_path: str | None
    version: str

    def command(self, conf: Path, work: Path) -> list[str]:
        cmd = [str(self.binary), "-F", "-e", "--no-caps", "-f", str(conf)]
        cmd += ["-R", str(work / "persist"), "-p", str(work / "pid"), "-c", str(work / "ctl")]
        if self.module_path is not None:
            cmd.append(f"--module-path={self.module_path}")
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.library_path:
            env["LD_LIBRARY_PATH"] = self.library_path
        return env


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and "ok installed" in result.stdout


def _missing_dependencies() -> list[str]:
    out = subprocess.run(
        ["apt-cache", "depends", *SYSLOG_NG_PACKAGES], capture_output=True, text=True, check=True
    ).stdout
    deps = {
        line.split(":", 1)[1].strip().strip("<>")
        for line in out.splitlines()
        if line.strip().startswith("Depends:")
    }
    deps -= set(SYSLOG_NG_PACKAGES)
    return sorted(d for d in deps if not _installed(d))


def syslog_ng(work: Path) -> SyslogNg:
    """Debian's syslog-ng: the installed one, or unpacked under ``work``."""
    system = shutil.which("syslog-ng")
    if system and _installed("syslog-ng-mod-http"):
        return SyslogNg(Path(system), None, None, _version([system], None))
    root = work / "root"
    binary = root / "usr" / "sbin" / "syslog-ng"
    if not binary.exists():
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        packages = [*SYSLOG_NG_PACKAGES, *_missing_dependencies()]
        result = subprocess.run(
            ["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise PeerError(f"apt-get download {' '.join(packages)} failed: {result.stderr}")
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    modules = sorted((root / "usr" / "lib" / "syslog-ng").glob("3.*"))
    if not modules:
        raise PeerError(f"no syslog-ng module dir under {root}")
    libs = [
        root / "usr" / "lib" / "syslog-ng",
        root / "usr" / "lib" / "x86_64-linux-gnu",
        root / "lib" / "x86_64-linux-gnu",
    ]
    library_path = ":".join(str(p) for p in libs if p.is_dir())
    return SyslogNg(binary, modules[-1], library_path, _version([str(binary)], library_path))


def _version(cmd: list[str], library_path: str | None) -> str:
    env = dict(os.environ)
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    result = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise PeerError(f"syslog-ng does not run: {result.stderr.strip()}")
    return result.stdout.splitlines()[0].strip()


def syslog_ng_http_conf(source: Path, url: str, batch_bytes: int, workers: int) -> str:
    """file() -> http(): raw lines, ``delimiter("\\n")``-joined, flow control (no drops)."""
    return f"""@version: 3.38
options {{ stats_freq(0); threaded(yes); }};
source s_file {{
  file("{source}" flags(no-parse) follow-freq(1) log-fetch-limit(10000) log-iw-size(100000));
}};
destination d_http {{
  http(url("{url}") method("POST") body("${{MSG}}") delimiter("\\n")
       batch-lines(100000) batch-bytes({batch_bytes}) batch-timeout(1000)
       workers({workers}) log-fifo-size(200000));
}};
log {{ source(s_file); destination(d_http); flags(flow-control); }};
"""


def syslog_ng_syslog_conf(source: Path, port: int) -> str:
    """file() -> syslog(): RFC 5424 over TCP with octet counting, as our syslog sink sends."""
    return f"""@version: 3.38
options {{ stats_freq(0); threaded(yes); }};
source s_file {{
  file("{source}" flags(no-parse) follow-freq(1) log-fetch-limit(10000) log-iw-size(100000));
}};
destination d_syslog {{
  syslog("127.0.0.1" port({port}) transport("tcp") log-fifo-size(200000));
}};
log {{ source(s_file); destination(d_syslog); flags(flow-control); }};
"""


def have_rsyslog_relp() -> bool:
    return os.path.exists(RSYSLOGD) and (RSYSLOG_MODULES / "imrelp.so").exists()


def rsyslog_command(conf: Path, work: Path) -> list[str]:
    return [RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")]


def receiver_conf(work: Path, relp_port: int, tcp_port: int, output: Path) -> str:
    """imrelp + imtcp -> one file holding each message's MSG, one per line (so when every
    line arrived the file has exactly the size of the source log)."""
    return f"""global(workDirectory="{work}" maxMessageSize="256k"
       parser.escapeControlCharactersOnReceive="off")
module(load="imrelp")
module(load="imtcp" maxFrameSize="262144")
template(name="msg" type="string" string="%msg%\\n")
input(type="imrelp" address="127.0.0.1" port="{relp_port}" maxDataSize="256k")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
action(type="omfile" file="{output}" template="msg" asyncWriting="on" ioBufferSize="1m")
"""


def rsyslog_relp_sender_conf(work: Path, source: Path, port: int) -> str:
    """The RELP peer: rsyslog's own imfile -> omrelp, RFC 5424 like our RELP sink."""
    return f"""global(workDirectory="{work}" maxMessageSize="256k")
module(load="imfile")
module(load="omrelp")
input(type="imfile" file="{source}" tag="nginx" ruleset="forward" freshStartTail="off")
ruleset(name="forward" queue.type="LinkedList" queue.size="200000"
        queue.dequeueBatchSize="1024") {{
  action(type="omrelp" target="127.0.0.1" port="{port}" windowSize="1024"
         template="RSYSLOG_SyslogProtocol23Format")
}}
"""
