"""README's "Use it in your cluster": `sidecars inject` comes first, and its example works as
written: run on a Helm-rendered release (what `helm template` prints), it injects, each --env
value lands in its part, and the output is valid for the cluster version it targets. The
released images' names it documents are what --image-prefix writes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from sidecars import __version__
from tests.unit.inject.test_golden import CORPUS, NATIVE, inject, validate

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def example_args() -> list[str]:
    (first, *_) = blocks(section("Use it in your cluster"))
    words = shlex.split(first.replace("\\\n", " "))
    # `<renderer> | sidecars inject ARGS | kubectl apply -f -`
    pipeline = " ".join(words).split(" | ")
    (command,) = (p for p in pipeline if p.startswith("sidecars inject"))
    assert pipeline[-1] == "kubectl apply -f -", pipeline
    return shlex.split(command)[2:]


def test_inject_comes_first_in_the_section() -> None:
    text = section("Use it in your cluster")
    assert blocks(text), "no example"
    assert text.index("sidecars inject") < text.index("```sh")


def test_the_example_works_on_a_helm_release() -> None:
    args = example_args()
    assert args, "the example passes no options"
    code, out, err = inject((CORPUS / "helm-release.yaml").read_text(), args)
    assert code == 0, err
    assert "Deployment/release-web: injected" in err
    validate(out, NATIVE)
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    env = {
        (c["name"], e["name"]): e.get("value")
        for c in spec["initContainers"]
        for e in c.get("env", [])
    }
    given = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
    assert given, "the example sets no --env"
    for name, _, value in (pair.partition("=") for pair in given):
        assert value in {v for (_, n), v in env.items() if n == name}, (name, value)


def test_released_image_names_are_what_image_prefix_writes() -> None:
    images = section("Images")
    assert "ghcr.io/<owner>/sidecars/<target>:X.Y.Z" in images
    assert "--image-prefix ghcr.io/<owner>/sidecars" in images
    code, out, err = inject(
        (CORPUS / "classic.yaml").read_text(), ["--image-prefix", "ghcr.io/o/sidecars"]
    )
    assert code == 0, err
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    ours = {c["image"] for c in deployment["spec"]["template"]["spec"]["initContainers"]}
    targets = {"config-fetcher", "log-shipper", "metrics-proxy"}
    assert ours == {f"ghcr.io/o/sidecars/{t}:{__version__}" for t in targets}
