"""The repository's scanners, each run offline from the binary its PyPI package ships, over every
file of its kind, with zero findings allowed:

  hadolint  the Dockerfile
  zizmor    every workflow in .github/workflows (auditor persona: every audit zizmor has)
  checkov   every manifest in k8s/ (kubernetes framework)

What a scanner must not flag is waived in the scanned file, next to its reason: a
`# hadolint ignore=DLxxxx` under a comment naming the rule, a `checkov.io/skipN: CKV_...=reason`
annotation in the resource's metadata. Each scanner also runs on a sample with a known finding,
so a tool that scans nothing, or output this file no longer parses, fails here too.

Also here, since it is checked by reading the same files: the release workflow builds every
image the Dockerfile defines, and every image a manifest names is one of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s import variants

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
# The same selection as tests/unit/test_manifests.py: every committed manifest.
MANIFESTS = sorted(p for p in (REPO / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")
# podman 4.3 (the e2e engine here) refuses a Pod whose annotation value is longer than this.
PODMAN_ANNOTATION_MAX = 63
SCANNER_TIMEOUT = 300


# The scanners live in a venv of their own (tests/run makes it from tests/scanners.txt): checkov
# alone pulls ~70 packages with pins (packaging<24, its own aiohttp range) that must not decide
# which versions of the parts' runtime dependencies the tests run against.
SCANNERS_BIN = Path(__file__).resolve().parents[2] / ".venv-scanners" / "bin"


def scanner(name: str) -> str:
    """The scanner's binary: in the scanners' venv, beside this interpreter, else on PATH."""
    path = (
        shutil.which(name, path=str(SCANNERS_BIN))
        or shutil.which(name, path=str(Path(sys.executable).parent))
        or shutil.which(name)
    )
    if path is None:
        pytest.fail(f"{name} is not installed: bash tests/run --install-only installs it")
    return path


def run(argv: list[str], cwd: Path, drop_env: tuple[str, ...]) -> subprocess.CompletedProcess:
    """The scanner without the environment variables (prefixes) that would change its verdict."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env={key: value for key, value in os.environ.items() if not key.startswith(drop_env)},
        capture_output=True,
        text=True,
        timeout=SCANNER_TIMEOUT,
        check=False,
    )


def shown(findings: list[Any]) -> str:
    return json.dumps(findings, indent=2)[:20000]


# ---- hadolint ---------------------------------------------------------------------------------


def hadolint(dockerfile: Path, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    # An explicit empty config: a .hadolint.yaml in $HOME or the XDG dirs cannot change the result.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    proc = run(
        [scanner("hadolint"), "--config", str(config), "--format", "json", *extra, str(dockerfile)],
        cwd=tmp_path,
        drop_env=("HADOLINT_",),  # HADOLINT_IGNORE, HADOLINT_FAILURE_THRESHOLD, ...
    )
    assert proc.returncode in (0, 1), f"hadolint exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout or "[]")


def test_hadolint_dockerfile(tmp_path: Path):
    findings = hadolint(DOCKERFILE, tmp_path)
    assert findings == [], f"hadolint findings in the Dockerfile:\n{shown(findings)}"


def test_hadolint_ignores_are_reasoned(tmp_path: Path):
    """Every rule an inline pragma waives is named in the comment right above the pragma, and
    each pragma waives something (without pragmas, exactly those rules are found)."""
    lines = DOCKERFILE.read_text().splitlines()
    waived: set[str] = set()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint ignore=(\S+)", line)
        if match is None:
            continue
        rules = set(match[1].split(","))
        reason = []
        for above in reversed(lines[:number]):
            if not above.startswith("#"):
                break
            reason.append(above)
        for rule in rules:
            assert any(rule in text for text in reason), (
                f"Dockerfile:{number + 1}: ignore={rule} without a comment above saying why"
            )
        waived |= rules
    unpragmaed = hadolint(DOCKERFILE, tmp_path, "--disable-ignore-pragma")
    assert {finding["code"] for finding in unpragmaed} == waived


def test_hadolint_finds_a_known_finding(tmp_path: Path):
    sample = tmp_path / "Dockerfile"
    sample.write_text("FROM debian:12\nRUN curl -s https://example.invalid | sh\n")
    assert "DL4006" in {finding["code"] for finding in hadolint(sample, tmp_path)}


# ---- zizmor -----------------------------------------------------------------------------------


def zizmor(workflow: Path, output: str = "json") -> subprocess.CompletedProcess:
    # --offline: no GitHub API (the online audits need a token and the network; the release
    # workflow's `pins` job runs them). The auditor persona: code smells and low-confidence too.
    proc = run(
        [
            scanner("zizmor"),
            "--offline",
            "--persona=auditor",
            f"--format={output}",
            "--color=never",
            "--no-progress",
            "--no-exit-codes",
            str(workflow),
        ],
        cwd=REPO,
        drop_env=("ZIZMOR_",),
    )
    assert proc.returncode == 0, f"zizmor exited {proc.returncode}: {proc.stderr}"
    return proc


def zizmor_findings(workflow: Path) -> list[dict[str, Any]]:
    return json.loads(zizmor(workflow).stdout)


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"e2e-kind.yml", "release.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_workflow(workflow: Path):
    findings = zizmor_findings(workflow)
    # zizmor's own rendering (source lines, help links) says more than its JSON would here.
    assert findings == [], (
        f"zizmor findings in {workflow.name}:\n{zizmor(workflow, 'plain').stdout}"
    )


def test_zizmor_finds_a_known_finding(tmp_path: Path):
    sample = tmp_path / ".github" / "workflows" / "ci.yml"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
    )
    found = {finding["ident"] for finding in zizmor_findings(sample)}
    assert {"unpinned-uses", "artipacked", "excessive-permissions"} <= found


def test_every_action_is_pinned_by_commit_with_its_version():
    """Offline, zizmor takes any hash pin; whether the SHA is a commit of that repository and
    matches its comment is checked online by the release's `pins` job. Here: every `uses:` is
    owner/repo@<40 hex> followed by a `# vX.Y.Z` comment for that job to check."""
    for workflow in WORKFLOWS:
        for number, line in enumerate(workflow.read_text().splitlines(), 1):
            match = re.match(r"\s*-?\s*uses:\s*(\S+)(.*)$", line)
            if match:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", match[1]), (
                    f"{workflow.name}:{number}: {match[1]} is not pinned by commit"
                )
                assert re.fullmatch(r"\s+# v\d+(\.\d+)*", match[2]), (
                    f"{workflow.name}:{number}: no `# vX.Y.Z` comment after the pin"
                )


# ---- checkov ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckovRun:
    results: dict[str, list[dict[str, Any]]]  # passed_checks / failed_checks / skipped_checks
    summary: dict[str, Any]
    sample: Path  # k8s/pod.yaml without its skip annotations

    def of(self, kind: str, path: Path) -> list[dict[str, Any]]:
        return [c for c in self.results.get(kind, []) if Path(c["file_abs_path"]) == path]


def unannotated(path: Path) -> str:
    """A manifest with every checkov skip annotation removed (what checkov would flag)."""
    docs = variants.load(path)
    for doc in docs:
        annotations = doc.get("metadata", {}).get("annotations", {})
        for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
            del annotations[key]
    return variants.dump(docs)


@pytest.fixture(scope="session")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> CheckovRun:
    """One checkov run (it takes seconds to start) over every manifest plus the sample."""
    workdir = tmp_path_factory.mktemp("checkov")
    sample = workdir / "sample.yaml"
    sample.write_text(unannotated(REPO / "k8s" / "pod.yaml"))
    argv = [scanner("checkov"), "--framework", "kubernetes", "--skip-download", "-o", "json"]
    for path in [*MANIFESTS, sample]:
        argv += ["-f", str(path)]
    # No platform key, so no download or upload: an offline run, whatever the environment holds;
    # no CKV_* settings (CKV_SKIP_CHECK, ...) that would waive checks outside the manifests.
    proc = run(argv, cwd=workdir, drop_env=("BC_API_KEY", "BC_API_URL", "PRISMA_API_URL", "CKV_"))
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}: {proc.stderr[-4000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r["check_type"] == "kubernetes"]
    return CheckovRun(results=report["results"], summary=report["summary"], sample=sample)


def test_there_are_manifests():
    assert {REPO / "k8s" / "pod.yaml", REPO / "k8s" / "classic" / "pod.yaml"} <= set(MANIFESTS)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_checkov_manifest(checkov: CheckovRun, path: Path):
    failed = [
        {key: check[key] for key in ("check_id", "check_name", "resource", "file_line_range")}
        for check in checkov.of("failed_checks", path)
    ]
    assert failed == [], f"checkov failed checks in {path.relative_to(REPO)}:\n{shown(failed)}"
    assert checkov.of("passed_checks", path), f"checkov scanned nothing in {path}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_checkov_skips_are_reasoned(checkov: CheckovRun, path: Path):
    for check in checkov.of("skipped_checks", path):
        reason = check["check_result"].get("suppress_comment", "").strip()
        assert len(reason) >= 10, f"{path}: skip of {check['check_id']} without a reason"


def test_checkov_parsed_everything(checkov: CheckovRun):
    assert checkov.summary["parsing_errors"] == 0, checkov.results.get("parsing_errors")


def test_checkov_finds_what_the_annotations_skip(checkov: CheckovRun):
    failed = {check["check_id"] for check in checkov.of("failed_checks", checkov.sample)}
    skipped = {
        check["check_id"] for check in checkov.of("skipped_checks", REPO / "k8s" / "pod.yaml")
    }
    assert skipped and failed == skipped


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_annotations_fit_podman(path: Path):
    """The skip annotations also reach `podman kube play` (the demo, e2e): 4.3 refuses the whole
    Pod over one annotation value longer than 63 characters."""
    for doc in variants.load(path):
        for meta in (
            doc.get("metadata", {}),
            doc.get("spec", {}).get("template", {}).get("metadata", {}),
        ):
            for key, value in (meta.get("annotations") or {}).items():
                if key == "sidecars.inject/status":  # the podman variant drops it (variants.py)
                    continue
                assert len(value) <= PODMAN_ANNOTATION_MAX, (
                    f"{path.name}: annotation {key} is {len(value)} > {PODMAN_ANNOTATION_MAX} long"
                )


# ---- the release builds every image --------------------------------------------------------


def dockerfile_images() -> set[str]:
    """The Dockerfile's stages that are images: those with an ENTRYPOINT of their own."""
    images, stage = set(), None
    for line in DOCKERFILE.read_text().splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I):
            stage = match[1]
        elif line.startswith("ENTRYPOINT") and stage:
            images.add(stage)
    return images


def test_release_builds_every_dockerfile_image():
    release = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    targets = release["jobs"]["image"]["strategy"]["matrix"]["target"]
    assert dockerfile_images() == {
        "config-fetcher",
        "log-shipper",
        "metrics-proxy",
        "nginx",
        "origin",
    }
    assert sorted(targets) == sorted(dockerfile_images())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_images_are_released(path: Path):
    """Each of the project's images a manifest names (localhost/sidecars/<target>:<tag>; the
    app's own nginx image is the user's) is one the release publishes, as
    ghcr.io/<owner>/sidecars/<target>:<tag>."""
    for doc in variants.load(path):
        spec = doc.get("spec", {})
        spec = spec.get("jobTemplate", {}).get("spec", spec)
        spec = spec.get("template", {}).get("spec", spec)
        for container in variants.all_containers(spec):
            if not container["image"].startswith("localhost/sidecars/"):
                continue
            match = re.fullmatch(r"localhost/sidecars/([a-z0-9-]+):[\w.-]+", container["image"])
            assert match, f"{path.name}: {container['image']} is not localhost/sidecars/<target>"
            assert match[1] in dockerfile_images(), f"{path.name}: no image {match[1]} is released"
