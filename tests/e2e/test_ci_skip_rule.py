"""tests/conftest.py's rule, run for real in a child pytest: under CI=true a skipped e2e_pod test
fails the session with the reason; e2e_kind and unmarked tests may still skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SUITE = """
import pytest

@pytest.fixture(scope="session")
def engine():
    pytest.skip("podman is not installed")

@pytest.mark.e2e_pod
def test_pod(engine):
    pass

@pytest.mark.e2e_kind
def test_kind():
    pytest.skip("kind is not installed")

def test_unit():
    pass
"""
INI = """
[pytest]
markers =
    e2e_pod: x
    e2e_kind: x
"""


def run_suite(
    tmp_path: Path, ci: str | None, strict: str | None = None
) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text(INI)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SIDECARS_STRICT_MARKERS")}
    if ci is not None:
        env["CI"] = ci
    if strict is not None:
        env["SIDECARS_STRICT_MARKERS"] = strict
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_outside_ci_the_pod_level_may_skip(tmp_path: Path):
    proc = run_suite(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout
    assert "podman is not installed" in proc.stdout  # the reason is printed


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_under_ci_a_skipped_pod_test_fails_the_session(tmp_path: Path, ci: str):
    proc = run_suite(tmp_path, ci)
    assert proc.returncode == 1, proc.stdout
    assert "CI=true: an e2e_pod test may not skip, but it did: podman is not installed" in (
        proc.stdout
    )
    assert "1 passed, 1 skipped, 1 error" in proc.stdout  # kind still skips


def test_a_kind_ci_job_can_make_the_kind_level_strict(tmp_path: Path):
    proc = run_suite(tmp_path, "true", strict="e2e_kind")
    assert proc.returncode == 1, proc.stdout
    assert "CI=true: an e2e_kind test may not skip, but it did: kind is not installed" in (
        proc.stdout
    )
    assert "1 failed, 1 passed, 1 error" in proc.stdout
