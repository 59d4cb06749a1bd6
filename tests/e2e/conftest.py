"""Session fixtures of the e2e-pod level: one hermetic podman, images built once per run, and
the demo origin pod. Teardown (pods, volumes, network, storage, host state) runs on failure too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8s import variants
from tests.e2e import images as images_mod
from tests.e2e import pods
from tests.e2e.engine import Podman, missing_tools

# Step -> seconds, printed in the terminal summary (how long the builds take on this machine).
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def engine() -> Iterator[Podman]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"e2e-pod needs {', '.join(missing)} (tests/run installs them)")
    root = Path(tempfile.mkdtemp(prefix="sidecars-e2e-"))
    podman = Podman.start(root)
    try:
        yield podman
    finally:
        notes = podman.close()
        for note in notes:
            print(f"e2e teardown: {note}")


@pytest.fixture(scope="session")
def images(engine: Podman) -> images_mod.Built:
    wanted = images_mod.manifest_images(
        doc for manifest in images_mod.MANIFESTS for doc in variants.load(manifest)
    )
    built = images_mod.make_images(engine, engine.root / "build", wanted)
    TIMINGS.update(built.timings)
    return built


@pytest.fixture(scope="session")
def origin(engine: Podman, images: images_mod.Built) -> Iterator[pods.PlayedPod]:
    pod = pods.play(engine, pods.ORIGIN_POD)
    try:
        assert pod.play.returncode == 0, pod.play.stderr
        pods.wait_http_ok(pod.url(8090, "/site.tar.gz"), what="the demo origin")
        yield pod
    finally:
        engine.down(pod.name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("e2e image build timings")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{step:<40} {seconds:6.1f} s")
