"""The project's images, built from its Dockerfile with no registry in reach.

1. A Debian base image made by mmdebstrap from the host's own apt sources (same release as the
   host), imported into podman. The tarball is kept for the rest of the day in BASE_CACHE
   (/var/cache/sidecars-e2e, one file) so repeated runs skip the 30-80 s of mmdebstrap. It has
   python3 + venv; the nginx targets apt-install nginx-light on top of it, exactly as the
   Dockerfile does for any plain Debian base.
2. The Python dependencies: wheels built on the host with the host's own pip configuration
   (index, CA bundle, local wheel dirs), handed to the build as the `wheels` build context, so
   pip inside the build runs with --no-index. When the host's Python differs from the base's
   (wheels would not fit), pip inside the build uses the index instead, with the host's CA
   bundle as a build secret and the host's index settings as build args.
3. One `podman build --target T` per image a manifest names (localhost/sidecars/T:TAG).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.engine import Podman

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = (REPO / "k8s" / "pod.yaml", REPO / "k8s" / "demo" / "origin.yaml")
BASE_IMAGE = "localhost/sidecars-base"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_REF = re.compile(r"^localhost/sidecars/(?P<target>[a-z0-9-]+):(?P<tag>[\w.-]+)$")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Today's base tarball, reused by later runs of the day (mmdebstrap takes 30-80 s here).
BASE_CACHE = Path(os.environ.get("SIDECARS_E2E_CACHE", "/var/cache/sidecars-e2e"))
# What goes into the build context copy the host builds its wheels from.
PACKAGE_FILES = ("pyproject.toml", "README.md", "sidecars")


# ---------------------------------------------------------------------------------------------
# Pure logic: which images, which apt sources.


def targets_of(images: Iterable[str]) -> dict[str, str]:
    """Dockerfile target -> image reference, for every localhost/sidecars/<target>:<tag>."""
    out = {}
    for image in images:
        match = IMAGE_REF.match(image)
        if match is None:
            raise ValueError(f"image {image!r} is not localhost/sidecars/<target>:<tag>")
        out[match["target"]] = image
    return out


def manifest_images(docs: Iterable[Mapping]) -> list[str]:
    images = []
    for doc in docs:
        spec = doc.get("spec", {}) if doc.get("kind") == "Pod" else {}
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            if container["image"] not in images:
                images.append(container["image"])
    return images


@dataclass(frozen=True)
class AptSource:
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> Iterator[AptSource]:
    """Enabled `deb` stanzas of a .sources file (deb822)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        yield AptSource(
            uris=tuple(fields.get("uris", "").split()),
            suites=tuple(fields.get("suites", "").split()),
            components=tuple(fields.get("components", "").split()),
        )


def parse_one_line(text: str) -> Iterator[AptSource]:
    """`deb [options] URI SUITE COMPONENT...` lines of a sources.list."""
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            yield AptSource(uris=(line[1],), suites=(line[2],), components=tuple(line[3:]))


def sources_for(sources: Iterable[AptSource], codename: str) -> str:
    """A deb822 sources file for the base image: the host's entries for ``codename`` (and its
    -updates/-security suites), main component only. Signed-By is left out: mmdebstrap brings the
    host's Debian keyring into the image."""
    stanzas = []
    for source in sources:
        suites = [s for s in source.suites if s == codename or s.startswith(codename + "-")]
        if not suites or not source.uris or "main" not in source.components:
            continue
        stanzas.append(
            f"Types: deb\nURIs: {' '.join(source.uris)}\nSuites: {' '.join(suites)}\n"
            "Components: main\n"
        )
    if not stanzas:
        raise ValueError(f"the host's apt sources have no 'main' entry for {codename}")
    return "\n".join(stanzas)


def host_apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    out: list[AptSource] = []
    if (etc / "sources.list").is_file():
        out += parse_one_line((etc / "sources.list").read_text())
    for path in sorted((etc / "sources.list.d").glob("*.list")):
        out += parse_one_line(path.read_text())
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        out += parse_deb822(path.read_text())
    return out


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value:
            return value.strip('"')
    raise ValueError(f"{os_release} has no VERSION_CODENAME")


def pip_index_args(environ: Mapping[str, str]) -> list[str]:
    """The host's pip index settings (env first, then pip's config files) as build args."""
    args = []
    for key, env in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = environ.get(env, "")
        if not value:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", f"global.{key}"],
                capture_output=True,
                text=True,
                check=False,
            )
            value = proc.stdout.strip() if proc.returncode == 0 else ""
        # The host's local file:// indexes do not exist inside the build.
        urls = [url for url in value.split() if not url.startswith("file:")]
        if urls:
            args += ["--build-arg", f"{env}={' '.join(urls)}"]
    return args


# ---------------------------------------------------------------------------------------------
# I/O: make the base, the wheels, the images.


@dataclass
class Built:
    """What make_images() produced, with how long each step took (seconds)."""

    images: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    pip_path: str = ""
    pip_args: list[str] = field(default_factory=list)  # how pip gets its packages in a build


def base_cache_name(codename: str, sources: str, packages: Iterable[str], day: str) -> str:
    """The cached base tarball's name: a new one each day and whenever its inputs change."""
    key = hashlib.sha256("\n".join([codename, sources, *packages]).encode()).hexdigest()[:16]
    return f"base-{codename}-{key}-{day}.tar"


def make_base(podman: Podman, workdir: Path) -> str:
    """mmdebstrap the base (or reuse today's tarball from BASE_CACHE), import it into podman.
    Returns where the tarball came from."""
    codename = host_codename()
    sources_text = sources_for(host_apt_sources(), codename)
    name = base_cache_name(codename, sources_text, BASE_PACKAGES, time.strftime("%Y-%m-%d"))
    cached = BASE_CACHE / name
    origin = "cached"
    if not cached.exists():
        origin = "mmdebstrap"
        sources = workdir / "base.sources"
        sources.write_text(sources_text)
        tarball = workdir / "base.tar"
        proc = subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                "--include=" + ",".join(BASE_PACKAGES),
                codename,
                str(tarball),
                str(sources),
            ],
            capture_output=True,
            text=True,
            env=podman.env,
            check=False,
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"mmdebstrap exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        # Keep only the newest tarball; renamed into place so a reader never sees half of one.
        BASE_CACHE.mkdir(parents=True, exist_ok=True)
        for old in BASE_CACHE.glob("base-*.tar"):
            old.unlink(missing_ok=True)
        partial = BASE_CACHE / f".{name}.{os.getpid()}"
        shutil.move(tarball, partial)
        partial.rename(cached)
    podman(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        str(cached),
        BASE_IMAGE,
    )
    return origin


def image_python(podman: Podman) -> str:
    out = podman(
        "run",
        "--rm",
        "--network",
        "none",
        BASE_IMAGE,
        "python3",
        "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])",
    )
    return out.stdout.strip()


def build_wheels(workdir: Path) -> Path:
    """Wheels of the package and its dependencies, built by the host's pip (and its config)."""
    src = workdir / "src"
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    wheels = workdir / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(src)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip wheel exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return wheels


def build_args(pip_args: list[str]) -> list[str]:
    return [
        "build",
        "--network",
        "host",  # RUN steps (apt, pip) need no bridge of their own
        "--layers",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"NGINX_IMAGE={BASE_IMAGE}",
        *pip_args,
    ]


def make_images(podman: Podman, workdir: Path, images: Iterable[str]) -> Built:
    """Build every image the manifests name, from the Dockerfile, on a local base."""
    built = Built(images=targets_of(images))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    origin = make_base(podman, workdir)
    built.timings[f"base image ({origin} + import)"] = time.monotonic() - start

    start = time.monotonic()
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if image_python(podman) == host_python:
        pip_args = ["--build-context", f"wheels={build_wheels(workdir)}"]
        built.pip_path = f"host wheels (Python {host_python}), pip --no-index in the build"
    else:
        pip_args = pip_index_args(os.environ)
        if CA_BUNDLE.exists():
            pip_args += ["--secret", f"id=ca-bundle,src={CA_BUNDLE}"]
        built.pip_path = "index from the host's pip config, host CA bundle as build secret"
    built.timings["wheels"] = time.monotonic() - start
    built.pip_args = pip_args

    for target, image in built.images.items():
        start = time.monotonic()
        podman(*build_args(pip_args), "--target", target, "--tag", image, str(REPO), timeout=1200)
        built.timings[f"build {target}"] = time.monotonic() - start
    return built
