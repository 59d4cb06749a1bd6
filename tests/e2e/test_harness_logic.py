"""Unit tests of the e2e harness's pure logic (no podman needed): apt sources for the base
image, the images a manifest names, engine configs, and the netavark state teardown undoes."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from k8s import variants
from tests.e2e import images, injected
from tests.e2e.engine import (
    NETWORK_CHAIN,
    containers_conf,
    live_network_chains,
    netavark_chains,
    orphans,
    pick_subnet,
    rules_into,
    subnets_in,
)

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://third.example/repo
Suites: nodistro
Components: main

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_stanzas():
    sources = list(images.parse_deb822(DEB822))
    assert [s.uris for s in sources] == [
        ("http://mirror.example/debian",),
        ("http://mirror.example/debian-security",),
        ("http://third.example/repo",),
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].components == ("main", "contrib")


def test_one_line_sources():
    text = (
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main  # comment\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://m.example/debian bookworm main\n"
    )
    (source,) = images.parse_one_line(text)
    assert source == images.AptSource(("http://m.example/debian",), ("bookworm",), ("main",))


def test_sources_for_keeps_only_the_release_main():
    text = images.sources_for(images.parse_deb822(DEB822), "bookworm")
    assert "third.example" not in text and "off.example" not in text
    assert "Suites: bookworm bookworm-updates\n" in text
    assert "Suites: bookworm-security\n" in text
    assert "contrib" not in text and "Signed-By" not in text


def test_sources_for_without_a_match_says_so():
    with pytest.raises(ValueError, match="no 'main' entry for trixie"):
        images.sources_for(images.parse_deb822(DEB822), "trixie")


def test_host_apt_sources_reads_all_formats(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "x.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "y.list.disabled").write_text("deb http://no/ bookworm main\n")
    uris = [s.uris[0] for s in images.host_apt_sources(tmp_path)]
    assert uris[0] == "http://a.example/debian" and len(uris) == 4


def test_host_codename(tmp_path: Path):
    (tmp_path / "os-release").write_text('NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert images.host_codename(tmp_path / "os-release") == "bookworm"
    (tmp_path / "os-release").write_text('NAME="Debian"\n')
    with pytest.raises(ValueError, match="VERSION_CODENAME"):
        images.host_codename(tmp_path / "os-release")


def test_images_the_manifests_name_map_to_dockerfile_targets():
    docs = [doc for path in images.MANIFESTS for doc in variants.load(path)]
    targets = images.targets_of(images.manifest_images(docs))
    assert set(targets) >= {"config-fetcher", "nginx", "origin"}
    dockerfile = (images.REPO / "Dockerfile").read_text()
    for target in targets:
        assert f" AS {target}\n" in dockerfile, f"Dockerfile has no target {target}"


def test_foreign_image_reference_is_refused():
    with pytest.raises(ValueError, match="not localhost/sidecars/<target>:<tag>"):
        images.targets_of(["nginx:latest"])


def test_pip_index_args_take_env_first_and_skip_local_file_indexes():
    args = images.pip_index_args(
        {
            "PIP_INDEX_URL": "https://index.example/simple",
            "PIP_EXTRA_INDEX_URL": "file:///opt/x https://extra.example/simple",
        }
    )
    assert args == [
        "--build-arg",
        "PIP_INDEX_URL=https://index.example/simple",
        "--build-arg",
        "PIP_EXTRA_INDEX_URL=https://extra.example/simple",
    ]


def test_containers_conf_carries_the_machine_facts(tmp_path: Path):
    conf = containers_conf(tmp_path, 20000)
    assert 'runtime = "runc"' in conf
    assert '"nofile=20000:20000"' in conf
    assert f'tmp_dir = "{tmp_path}/tmp"' in conf
    assert 'lock_type = "file"' in conf


SAVE = """\
*nat
:PREROUTING ACCEPT [0:0]
:NETAVARK-1D8721804F16F - [0:0]
:NETAVARK-HOSTPORT-DNAT - [0:0]
:NETAVARK-DN-1D8721804F16F - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A POSTROUTING -s 10.89.0.0/24 -j NETAVARK-1D8721804F16F
-A NETAVARK-HOSTPORT-DNAT -p tcp -m comment --comment "dnat x y" -j NETAVARK-DN-1D8721804F16F
COMMIT
"""


def test_netavark_chains_and_the_rules_into_them():
    chains = netavark_chains(SAVE)
    assert chains == {
        "NETAVARK-1D8721804F16F",
        "NETAVARK-HOSTPORT-DNAT",
        "NETAVARK-DN-1D8721804F16F",
    }
    assert {c for c in chains if NETWORK_CHAIN.match(c)} == {"NETAVARK-1D8721804F16F"}
    rules = rules_into(SAVE, {"NETAVARK-HOSTPORT-DNAT", "NETAVARK-DN-1D8721804F16F"})
    assert rules[0] == [
        "-D",
        "PREROUTING",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "NETAVARK-HOSTPORT-DNAT",
    ]
    # Quoted comments stay one argument.
    assert "dnat x y" in rules[1]


def test_a_network_chain_is_live_only_while_its_bridge_has_an_address():
    assert live_network_chains(SAVE, ["127.0.0.1/8", "10.89.0.1/24"]) == {"NETAVARK-1D8721804F16F"}
    # The bridge is gone (engine killed before netavark's teardown): a leftover, not live.
    assert live_network_chains(SAVE, ["127.0.0.1/8", "192.0.2.2/24"]) == set()


def test_subnets_in_routes_and_rules():
    text = "10.89.7.0/24 dev podman3 proto kernel\n-A POSTROUTING -s 10.89.0.0/24 -j X\n"
    assert subnets_in(text) == [
        ipaddress.ip_network("10.89.7.0/24"),
        ipaddress.ip_network("10.89.0.0/24"),
    ]


def test_pick_subnet_avoids_used_ones():
    used = [ipaddress.ip_network(f"10.89.{i}.0/24") for i in range(256) if i != 42]
    assert pick_subnet(used, random.Random(1)) == "10.89.42.0/24"
    # A route covering the whole pool leaves nothing: said plainly.
    with pytest.raises(RuntimeError, match="no free /24"):
        pick_subnet([ipaddress.ip_network("10.0.0.0/8")], random.Random(1))


def test_orphans_are_engines_of_dead_processes_but_never_the_demo():
    entries = [{"pid": 10}, {"pid": 11}, {"pid": None}]
    assert orphans(entries, alive=lambda pid: pid == 11) == [{"pid": 10}]


def test_base_cache_name_changes_with_its_inputs_and_the_day():
    name = images.base_cache_name("bookworm", "Types: deb", ["python3"], "2026-11-24")
    assert name.startswith("base-bookworm-") and name.endswith("-2026-11-24.tar")
    others = {
        images.base_cache_name("trixie", "Types: deb", ["python3"], "2026-11-24"),
        images.base_cache_name("bookworm", "Types: deb\n", ["python3"], "2026-11-24"),
        images.base_cache_name("bookworm", "Types: deb", ["python3", "nginx"], "2026-11-24"),
        images.base_cache_name("bookworm", "Types: deb", ["python3"], "2026-11-25"),
    }
    assert name not in others and len(others) == 4


def test_injected_pod_is_what_podman_4_3_plays_on_the_ports_asked(tmp_path: Path) -> None:
    """The demo's and test_inject_pod's Pod: one replica of the injected Deployment, nginx on
    the official-layout image, the ConfigMap as a hostPath file, the fixed host ports given."""
    docs = injected.inject()
    ports = {p: 20000 + i for i, p in enumerate(injected.container_ports(docs))}
    (pod,) = injected.podman_pod(docs, tmp_path / "conf", "localhost/x:1", "web", ports)
    spec = pod["spec"]
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "web"
    assert all(len(str(v)) <= 63 for v in pod["metadata"]["annotations"].values())
    assert not any("configMap" in v or "secret" in v for v in spec["volumes"])
    (conf,) = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
    assert "stub_status" in Path(conf).read_text()
    containers = {c["name"]: c for c in spec["containers"]}
    assert containers["nginx"]["image"] == "localhost/x:1"
    assert not any("subPath" in m for m in containers["nginx"]["volumeMounts"])
    published = {
        p["containerPort"]: p["hostPort"] for c in spec["containers"] for p in c.get("ports", [])
    }
    assert published == ports and {8080, 9113} <= set(published)
