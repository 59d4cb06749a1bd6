"""The wiring ``sidecars inject`` adds, read from template.yaml (generated from k8s/pod.yaml by
``python3 k8s/variants.py template``, shipped as package data)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import urllib.parse
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.tokens import CommentToken

PARTS = ("config-fetcher", "log-shipper", "metrics-proxy")
# Column of a container's keys in template.yaml (`initContainers:` / `  - name:`): its comments
# are shifted from there to where the container lands in the user's document.
ITEM_COLUMN = 4


@dataclasses.dataclass(frozen=True)
class Template:
    raw: Any  # the loaded template.yaml (ruamel round-trip objects, comments kept)

    @property
    def part_order(self) -> list[str]:
        return list(self.raw["parts"])

    def containers_of(self, part: str) -> set[str]:
        return set(self.raw["parts"][part]["containers"])

    def part_of(self, container: str) -> str:
        for part, entry in self.raw["parts"].items():
            if container in entry["containers"]:
                return part
        raise KeyError(container)

    def volumes_for(self, parts: list[str]) -> set[str]:
        return {v for p in parts for v in self.raw["parts"][p]["volumes"]}

    def init_containers(self, parts: list[str]) -> list[Any]:
        return self._pick("initContainers", parts)

    def containers(self, parts: list[str]) -> list[Any]:
        return self._pick("containers", parts)

    def _pick(self, key: str, parts: list[str]) -> list[Any]:
        wanted = {c for p in parts for c in self.containers_of(p)}
        return [copy.deepcopy(c) for c in self.raw[key] if c["name"] in wanted]

    def volumes(self, parts: list[str]) -> list[Any]:
        wanted = self.volumes_for(parts)
        return [copy.deepcopy(v) for v in self.raw["volumes"] if v["name"] in wanted]

    def app_mounts(self, parts: list[str]) -> list[Any]:
        wanted = self.volumes_for(parts)
        return [copy.deepcopy(m) for m in self.raw["app"]["volumeMounts"] if m["name"] in wanted]

    @property
    def pod(self) -> Any:
        return self.raw["pod"]

    @property
    def annotations(self) -> Any:
        return self.raw["annotations"] or {}

    def env_value(self, part: str, name: str) -> str | None:
        """The literal value the part's first container declaring ``name`` gives it."""
        for c in [*self.raw["initContainers"], *self.raw["containers"]]:
            if c["name"] in self.containers_of(part):
                for item in c.get("env", []):
                    if item["name"] == name and "value" in item:
                        return str(item["value"])
        return None

    def stub_status_port(self, env: Mapping[str, str]) -> int | None:
        """The port of the stub_status URL the metrics-proxy scrapes (``env``: its --env values,
        which win over the template's), where nginx must listen on 127.0.0.1."""
        name = "METRICS_PROXY_STUB_STATUS_URL"
        url = env.get(name, self.env_value("metrics-proxy", name))
        if url is None:
            return None
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or 80
        except ValueError:  # the part's own settings rules report it, naming the setting
            return None
        # Another host's stub_status is no server for this Pod's nginx to add.
        return port if parts.hostname in ("127.0.0.1", "localhost", "::1") else None

    def first_port(self, part: str) -> int | None:
        for c in [*self.raw["initContainers"], *self.raw["containers"]]:
            if c["name"] in self.containers_of(part) and c.get("ports"):
                return int(c["ports"][0]["containerPort"])
        return None


def _tokens(node: Any) -> list[CommentToken]:
    found: dict[int, CommentToken] = {}

    def collect(x: Any) -> None:
        if isinstance(x, CommentToken):
            found[id(x)] = x
        elif isinstance(x, list):
            for y in x:
                collect(y)

    def walk(n: Any) -> None:
        if isinstance(n, CommentedMap | CommentedSeq):
            collect(n.ca.comment)
            for v in n.ca.items.values():
                collect(v)
            for v in n.values() if isinstance(n, CommentedMap) else n:
                walk(v)

    walk(node)
    return list(found.values())


def shift_comments(node: Any, delta: int) -> None:
    """Move the full-line comments of a (copied) node ``delta`` columns (left if negative)."""
    if delta == 0:
        return

    def moved(line: str) -> str:
        if not line.lstrip().startswith("#") or not line.startswith(" "):
            return line
        if delta > 0:
            return " " * delta + line
        return line[min(-delta, len(line) - len(line.lstrip(" "))) :]

    for token in _tokens(node):
        token.value = "\n".join(moved(line) for line in token.value.split("\n"))
        if token.value.startswith("#"):  # a comment on its own line, placed by its column
            token.column = max(0, token.column + delta)


def parse(text: str) -> Template:
    rt = YAML()
    rt.preserve_quotes = True
    return Template(rt.load(text))


@functools.cache
def packaged() -> Template:
    return parse(resources.files("sidecars.inject").joinpath("template.yaml").read_text())
