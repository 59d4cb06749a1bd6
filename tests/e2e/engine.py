"""A hermetic rootful podman: every bit of engine state under one directory, gone after close().

podman 4.3 on these machines needs a few settings (see shared E2E-NOTES): runc (crun refuses the
hybrid cgroup layout), explicit ulimits (no CAP_SYS_RESOURCE here), cgroupfs (no systemd), file
events and file locks (no journald, no shared /dev/shm segment between two engines). Storage,
runtime state, volumes, network configs and TMPDIR all live under ``root``, exported through
CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, so the tests, the demo and a developer's own podman
never see each other's containers.

What cannot be kept under ``root`` is host state that netavark changes: net.ipv4.ip_forward,
iptables chains, and a few run directories. ``HostState`` records it before the engine starts and
close() puts back what this engine changed, unless another engine's network is still live.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Directories podman 4.3 writes outside its configured roots as root: aardvark-dns and IPAM
# state (run dir) and the image blob-info cache.
HOST_DIRS = (Path("/run/containers"), Path("/var/lib/containers"))
NETAVARK_CHAIN = re.compile(r"^:(NETAVARK\S*) ")
# A per-network chain (NETAVARK-<hash>); the shared ones are NETAVARK_FORWARD, -HOSTPORT-*.
NETWORK_CHAIN = re.compile(r"^NETAVARK-(?!HOSTPORT-|DN-)[0-9A-F]+$")
TABLES = ("filter", "nat")


class EngineError(RuntimeError):
    """A podman command failed; the message holds the command, exit code and stderr."""


def missing_tools() -> list[str]:
    """What this machine lacks to run the e2e level (empty when it can)."""
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (rootful podman: hostPorts, netavark bridge)")
    return missing


def storage_conf(root: Path) -> str:
    return f"""\
[storage]
driver = "overlay"
runroot = "{root}/run"
graphroot = "{root}/storage"
"""


def containers_conf(root: Path, nofile: int) -> str:
    return f"""\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]

[network]
network_backend = "netavark"
network_config_dir = "{root}/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
lock_type = "file"
tmp_dir = "{root}/tmp"
static_dir = "{root}/storage/libpod"
volume_path = "{root}/storage/volumes"
"""


def netavark_chains(iptables_save: str) -> set[str]:
    return {m.group(1) for line in iptables_save.splitlines() if (m := NETAVARK_CHAIN.match(line))}


def rules_into(iptables_save: str, chains: Iterable[str]) -> list[list[str]]:
    """The ``-A CHAIN ...`` rules that jump to one of ``chains``, as iptables -D arguments."""
    targets = set(chains)
    out = []
    for line in iptables_save.splitlines():
        if not line.startswith("-A "):
            continue
        words = line.split()
        if "-j" in words and words[words.index("-j") + 1] in targets:
            out.append(["-D", *shlex.split(line[3:])])
    return out


@dataclass
class HostState:
    """Host state netavark touches, as it was before this engine started."""

    ip_forward: str
    chains: dict[str, set[str]]
    absent_dirs: list[Path]

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            ip_forward=IP_FORWARD.read_text().strip(),
            chains={table: netavark_chains(_iptables_save(table)) for table in TABLES},
            absent_dirs=[d for d in HOST_DIRS if not d.exists()],
        )

    def to_json(self) -> dict:
        return {
            "ip_forward": self.ip_forward,
            "chains": {table: sorted(chains) for table, chains in self.chains.items()},
            "absent_dirs": [str(d) for d in self.absent_dirs],
        }

    @classmethod
    def from_json(cls, data: dict) -> HostState:
        return cls(
            ip_forward=data["ip_forward"],
            chains={table: set(chains) for table, chains in data["chains"].items()},
            absent_dirs=[Path(d) for d in data["absent_dirs"]],
        )

    def restore(self) -> list[str]:
        """Undo what engines added since capture(); return what was left alone and why."""
        saves = {table: _iptables_save(table) for table in TABLES}
        live = {
            c for save in saves.values() for c in netavark_chains(save) if NETWORK_CHAIN.match(c)
        }
        if live:
            # Another engine (or a user's podman) still has a network up: its forwarding and
            # port rules need the shared chains and ip_forward.
            return [f"left netavark's shared chains and ip_forward: networks still live {live}"]
        for table, save in saves.items():
            added = netavark_chains(save) - self.chains[table]
            for rule in rules_into(save, added):
                _iptables(table, rule)
            for chain in sorted(added):
                _iptables(table, ["-F", chain])
            for chain in sorted(added):
                _iptables(table, ["-X", chain])
        if IP_FORWARD.read_text().strip() != self.ip_forward:
            IP_FORWARD.write_text(self.ip_forward + "\n")
        for d in self.absent_dirs:
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
        return []


def _iptables_save(table: str) -> str:
    if shutil.which("iptables-save") is None:
        return ""
    return subprocess.run(
        ["iptables-save", "-t", table], capture_output=True, text=True, check=False
    ).stdout


def _iptables(table: str, args: Sequence[str]) -> None:
    subprocess.run(["iptables", "-t", table, *args], capture_output=True, check=False)


@dataclass
class Podman:
    """podman with its state under ``root`` and one bridge network (DNS: pods by name)."""

    root: Path
    network: str = field(default_factory=lambda: f"sidecars-{uuid.uuid4().hex[:8]}")
    host: HostState | None = None
    played: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONTAINERS_CONF=str(self.root / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(self.root / "storage.conf"),
            TMPDIR=str(self.root / "tmp"),
        )
        # A developer's own registries/auth settings must not leak in.
        env.pop("CONTAINER_HOST", None)
        env.pop("CONTAINER_CONNECTION", None)
        return env

    @classmethod
    def start(cls, root: Path) -> Podman:
        """Write the configs, record host state, create the network. close() undoes it all."""
        engine = cls(root=root)
        for sub in ("run", "storage", "tmp", "networks", "manifests"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        (root / "storage.conf").write_text(storage_conf(root))
        (root / "containers.conf").write_text(containers_conf(root, nofile))
        engine.host = HostState.capture()
        engine._save()
        try:
            engine("network", "create", engine.network)
        except BaseException:
            engine.close()
            raise
        return engine

    @classmethod
    def attach(cls, root: Path) -> Podman:
        """The engine a previous process started under ``root`` (the demo's up, then down)."""
        data = json.loads((root / "engine.json").read_text())
        engine = cls(root=root, network=data["network"], host=HostState.from_json(data["host"]))
        engine.played = [Path(p) for p in data["played"]]
        return engine

    def _save(self) -> None:
        data = {
            "network": self.network,
            "host": self.host.to_json() if self.host else None,
            "played": [str(p) for p in self.played],
        }
        (self.root / "engine.json").write_text(json.dumps(data, indent=1))

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            input=input.decode() if input is not None else None,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise EngineError(
                f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def play(self, manifest_text: str, name: str) -> subprocess.CompletedProcess[str]:
        """``podman kube play`` on this engine's network; the result is returned, not checked."""
        path = self.root / "manifests" / f"{name}.yaml"
        path.write_text(manifest_text)
        self.played.append(path)
        self._save()
        return self("kube", "play", "--network", self.network, str(path), check=False)

    def down(self, name: str) -> None:
        path = self.root / "manifests" / f"{name}.yaml"
        self("kube", "down", str(path), check=False, timeout=120)
        if path in self.played:
            self.played.remove(path)

    def logs(self, container: str) -> str:
        proc = self("logs", container, check=False)
        return proc.stdout + proc.stderr

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def pod_ip(self, pod: str) -> str:
        infra = self("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout.strip()
        networks = self.inspect(infra)["NetworkSettings"]["Networks"]
        return networks[self.network]["IPAddress"]

    def close(self) -> list[str]:
        """Remove pods, volumes, network and storage; restore host state. Never raises."""
        notes: list[str] = []
        for path in list(reversed(self.played)):
            self.down(path.stem)
        with contextlib.suppress(Exception):
            self("pod", "rm", "--all", "--force", "--time", "5", check=False, timeout=120)
            self("volume", "rm", "--all", "--force", check=False)
            self("network", "rm", "--force", self.network, check=False)
            # Unmounts the overlay layers and removes graphroot/runroot.
            self("system", "reset", "--force", check=False, timeout=300)
        if self.host is not None:
            with contextlib.suppress(Exception):
                notes += self.host.restore()
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        return notes


def _unmount_below(root: Path) -> None:
    """Lazily unmount anything still mounted under ``root`` (after a crash mid-run)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
