"""The images themselves: every part's target is ready to use, and the Dockerfile's CA-bundle
knob works: pip inside the build reaches the index through this machine's TLS-intercepting proxy
with the host CA bundle as a build secret (the path a user behind a corporate proxy takes), and
the bundle stays out of the image."""

from __future__ import annotations

import os

import pytest

from sidecars import __version__
from tests.e2e import images as build
from tests.e2e.engine import Podman

pytestmark = [pytest.mark.e2e_pod, pytest.mark.timeout(900)]


def test_build_with_ca_bundle_secret_and_index_from_pip_config(engine: Podman, images: build.Built):
    # `images` (the session's builds) made the base image this build starts from.
    if not build.CA_BUNDLE.exists():
        pytest.skip(f"no CA bundle at {build.CA_BUNDLE} to pass")
    tag = "localhost/sidecars/config-fetcher:ca-bundle-build"
    engine(
        *build.build_args(build.pip_index_args(os.environ)),
        "--secret",
        f"id=ca-bundle,src={build.CA_BUNDLE}",
        "--target",
        "config-fetcher",
        "--tag",
        tag,
        str(build.REPO),
        timeout=900,
    )
    try:
        assert "--source" in engine("run", "--rm", "--network", "none", tag, "--help").stdout
        secrets = engine(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "ls",
            tag,
            "/run/secrets",
            check=False,
        )
        assert "ca-bundle" not in secrets.stdout
    finally:
        engine("rmi", "--force", tag, check=False)


@pytest.mark.parametrize("part", ["config-fetcher", "log-shipper", "metrics-proxy"])
def test_every_part_has_a_ready_target(engine: Podman, images: build.Built, part: str):
    """One runtime layer, one ENTRYPOINT per part: each image runs its part as UID 101."""
    tag = f"localhost/sidecars/{part}:{__version__}"
    engine(*build.build_args(images.pip_args), "--target", part, "--tag", tag, str(build.REPO))
    run = ["run", "--rm", "--network", "none", "--read-only"]
    assert f"usage: sidecars {part}" in engine(*run, tag, "--help").stdout
    assert engine(*run, "--entrypoint", "id", tag, "-u").stdout.strip() == "101"
    # No installer or compiler in a final image.
    tools = engine(*run, "--entrypoint", "sh", tag, "-c", "command -v pip gcc cc || true")
    assert tools.stdout.strip() == ""
