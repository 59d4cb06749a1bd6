"""A hermetic rootful podman: every bit of engine state under one directory, gone after close().

podman 4.3 on these machines needs a few settings (see shared E2E-NOTES): runc (crun refuses the
hybrid cgroup layout), explicit ulimits (no CAP_SYS_RESOURCE here), cgroupfs (no systemd), file
events and file locks (no journald, no shared /dev/shm segment between two engines). Storage,
runtime state, volumes, network configs and TMPDIR all live under ``root``, exported through
CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, so the tests, the demo and a developer's own podman
never see each other's containers.

What cannot be kept under ``root`` is host state that netavark changes: net.ipv4.ip_forward,
iptables chains, and a few run directories. The first engine to start records that state as it
was (PRISTINE, shared by every engine of this harness: tests, demo, a second test run); close()
puts it back once no netavark network is live any more, so whichever engine stops last leaves
the host as the first one found it.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
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
PRISTINE = Path("/run/sidecars-e2e-host-state.json")
# This harness's engines, one file each: {root, subnet, pid}. Each engine keeps its own network
# config, so two engines would both pick podman's first free subnet (no bridge is up until a
# container runs) and break each other's routing: they pick at random from SUBNET_POOL and
# register it here. The pid (None for the demo, which outlives its process) lets a later engine
# tear down one whose process was killed before its own teardown could run.
ENGINES = Path("/run/sidecars-e2e-engines")
SUBNET_POOL = ipaddress.ip_network("10.89.0.0/16")
PRISTINE_LOCK = Path("/run/sidecars-e2e-host-state.lock")


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Engines starting and stopping at once must not both record or both restore."""
    with PRISTINE_LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


def live_network_chains(nat_save: str, addresses: Iterable[str]) -> set[str]:
    """Per-network chains whose network still has its bridge up (an address of this host in
    the network's subnet). A chain without one is a leftover of an engine that was killed
    before netavark could tear down, and must not keep the host from being restored."""
    local = [ipaddress.ip_interface(a).ip for a in addresses]
    live = set()
    for line in nat_save.splitlines():
        words = line.split()
        if words[:2] != ["-A", "POSTROUTING"] or "-s" not in words or "-j" not in words:
            continue
        chain = words[words.index("-j") + 1]
        if not NETWORK_CHAIN.match(chain):
            continue
        with contextlib.suppress(ValueError):
            subnet = ipaddress.ip_network(words[words.index("-s") + 1], strict=False)
            if any(ip in subnet for ip in local):
                live.add(chain)
    return live


def pick_subnet(used: Iterable[ipaddress.IPv4Network], rng: random.Random) -> str:
    """A /24 of SUBNET_POOL overlapping none of ``used``."""
    taken = list(used)
    free = [
        net for net in SUBNET_POOL.subnets(new_prefix=24) if not any(net.overlaps(u) for u in taken)
    ]
    if not free:
        raise RuntimeError(f"no free /24 left in {SUBNET_POOL} for an e2e network")
    return str(rng.choice(free))


def subnets_in(text: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network written as a.b.c.d/n in ``text`` (routes, iptables rules)."""
    out = []
    for raw in re.findall(r"\b\d+\.\d+\.\d+\.\d+/\d+\b", text):
        with contextlib.suppress(ValueError):
            out.append(ipaddress.ip_network(raw, strict=False))
    return out


def _used_subnets() -> list[ipaddress.IPv4Network]:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout
    registered = " ".join(p.read_text() for p in ENGINES.glob("*.json")) if ENGINES.is_dir() else ""
    return subnets_in(routes + _iptables_save("nat") + registered)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphans(entries: Iterable[dict], alive: Callable[[int], bool] = _alive) -> list[dict]:
    """Registered engines whose owning process is gone (the demo's, with no pid, never are)."""
    return [e for e in entries if e.get("pid") is not None and not alive(e["pid"])]


def sweep_orphans() -> list[str]:
    """Tear down engines whose test process was killed (a timeout, a stopped session)."""
    with _host_lock():
        entries = []
        for path in ENGINES.glob("*.json") if ENGINES.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                entries.append({**json.loads(path.read_text()), "file": str(path)})
        dead = orphans(entries)
    notes = []
    for entry in dead:
        root = Path(entry["root"])
        if (root / "engine.json").exists():
            Podman.attach(root).close()
            notes.append(f"tore down the engine of dead process {entry['pid']} at {root}")
        Path(entry["file"]).unlink(missing_ok=True)
    return notes


def _host_addresses() -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


@dataclass
class HostState:
    """Host state netavark touches, as it was before this engine started."""

    ip_forward: str
    chains: dict[str, set[str]]
    absent_dirs: list[Path]

    @classmethod
    def capture(cls) -> HostState:
        """The host as the first live engine found it (recorded now if none is live)."""
        with _host_lock():
            if PRISTINE.exists():
                with contextlib.suppress(ValueError, KeyError):
                    return cls.from_json(json.loads(PRISTINE.read_text()))
            state = cls(
                ip_forward=IP_FORWARD.read_text().strip(),
                chains={table: netavark_chains(_iptables_save(table)) for table in TABLES},
                absent_dirs=[d for d in HOST_DIRS if not d.exists()],
            )
            PRISTINE.write_text(json.dumps(state.to_json()))
            return state

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
        """Put the host back as it was, unless a netavark network is still live (another
        engine's, or a user's podman): then leave it, and return why."""
        with _host_lock():
            saves = {table: _iptables_save(table) for table in TABLES}
            live = live_network_chains(saves["nat"], _host_addresses())
            if live:
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
            PRISTINE.unlink(missing_ok=True)
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
    def start(cls, root: Path, *, outlives_process: bool = False) -> Podman:
        """Write the configs, record host state, create the network. close() undoes it all.

        An engine whose process dies without close() is torn down by the next engine's start,
        unless it was meant to outlive its process (the demo, closed by `--down`)."""
        sweep_orphans()
        engine = cls(root=root)
        for sub in ("run", "storage", "tmp", "networks", "manifests"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        (root / "storage.conf").write_text(storage_conf(root))
        (root / "containers.conf").write_text(containers_conf(root, nofile))
        engine.host = HostState.capture()
        engine._save()
        try:
            with _host_lock():
                subnet = pick_subnet(_used_subnets(), random.Random())
                ENGINES.mkdir(exist_ok=True)
                pid = None if outlives_process else os.getpid()
                entry = {"root": str(root), "subnet": subnet, "pid": pid}
                (ENGINES / f"{engine.network}.json").write_text(json.dumps(entry))
            engine("network", "create", "--subnet", subnet, engine.network)
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
        with contextlib.suppress(Exception):
            for path in list(reversed(self.played)):
                self.down(path.stem)
        with contextlib.suppress(Exception):
            self("pod", "rm", "--all", "--force", "--time", "5", check=False, timeout=120)
            self("volume", "rm", "--all", "--force", check=False)
            self("network", "rm", "--force", self.network, check=False)
            # Unmounts the overlay layers and removes graphroot/runroot.
            self("system", "reset", "--force", check=False, timeout=300)
        # conmon runs `podman container cleanup` after each container exits; let those finish
        # before the directory they work in goes (they would recreate parts of it).
        _wait_for_no_process_using(self.root, timeout=30)
        (ENGINES / f"{self.network}.json").unlink(missing_ok=True)
        if self.host is not None:
            with contextlib.suppress(Exception):
                notes += self.host.restore()
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        return notes


def _wait_for_no_process_using(root: Path, timeout: float) -> None:
    """Until no other process names ``root`` on its command line (or the deadline passes)."""
    needle, me = str(root).encode(), os.getpid()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        users = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    users.append(proc.name)
        if not users:
            return
        time.sleep(0.1)


def _unmount_below(root: Path) -> None:
    """Lazily unmount anything still mounted under ``root`` (after a crash mid-run)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
