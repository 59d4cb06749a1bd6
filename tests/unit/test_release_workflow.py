"""The release workflow publishes what the Dockerfile and the manifests need (issue 11).

It cannot run here (no GitHub, no registry); what can be checked offline is that it builds
every image target of the Dockerfile for both architectures, attaches an SBOM, signs by digest,
refuses a tag that differs from the package version, and that the kind matrix covers classic
(before 1.29) and native sidecars.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def image_targets(dockerfile: str) -> set[str]:
    """Stages no other stage builds on or copies from: the images `--target` is meant for."""
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.M | re.I)
    bases = set(re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M | re.I))
    copied = set(re.findall(r"from=([A-Za-z0-9_.-]+)", dockerfile))
    return {stage for stage in stages if stage not in bases | copied}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_image_targets_are_the_leaf_stages() -> None:
    text = "FROM a AS base\nFROM base AS one\nCOPY --from=tool /x /x\nFROM b AS tool\n"
    text += "FROM base AS two\n"
    assert image_targets(text) == {"one", "two"}


def test_every_image_target_is_built_for_both_architectures_signed_and_with_an_sbom() -> None:
    job = load("release.yml")["jobs"]["image"]
    targets = set(job["strategy"]["matrix"]["target"])
    assert targets == image_targets((ROOT / "Dockerfile").read_text())
    steps = job["steps"]
    build = next(s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action"))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert build["with"]["sbom"] is True
    assert build["with"]["target"] == "${{ matrix.target }}"
    sign = next(s for s in steps if "cosign sign" in s.get("run", ""))
    assert "@${DIGEST}" in sign["run"]  # by digest: the signature covers what was pushed
    assert job["permissions"]["id-token"] == "write"  # keyless signing


def test_images_carry_the_version_the_manifests_name() -> None:
    workflow = load("release.yml")
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as True
    assert "version" in workflow["jobs"]["image"]["needs"]
    version = re.search(
        r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), flags=re.M
    )
    assert version is not None
    manifests = [ROOT / "k8s" / "pod.yaml", ROOT / "k8s" / "deployment.yaml"]
    for manifest in manifests:
        tags = set(re.findall(r"image: \S*/sidecars/[a-z-]+:(\S+)", manifest.read_text()))
        assert tags == {version.group(1)}, manifest


def test_the_kind_matrix_covers_classic_and_native_sidecars() -> None:
    nodes = load("e2e-kind.yml")["jobs"]["kind"]["strategy"]["matrix"]["node"]
    minors = sorted(int(re.search(r":v1\.(\d+)\.", node).group(1)) for node in nodes)  # type: ignore[union-attr]
    assert minors[0] < 29 <= minors[1], minors  # one classic, then native from 1.29
    assert minors == sorted(set(minors)), minors
