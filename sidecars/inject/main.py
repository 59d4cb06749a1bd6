"""``sidecars inject``: read manifests (a file or stdin), write them with the sidecars added to
stdout, one report line per document on stderr. Exit 2 with one line on anything refused;
nothing is written to stdout unless the whole output was rendered."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO, TextIO

from sidecars import __version__
from sidecars.inject import envs, template
from sidecars.inject.errors import InjectError
from sidecars.inject.stream import run
from sidecars.inject.wiring import Options, customise

NATIVE_SINCE = (1, 29)
# Far above any real manifest stream (a big Helm release is a few MiB); the parse of the whole
# stream is held in memory before anything is written.
MAX_INPUT_BYTES = 32 * 1024 * 1024
DEFAULT_KUBE_VERSION = "1.29"
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.\d+)?")
# An image repository without its last part, as the distribution reference grammar has it: an
# optional registry host (with a port) and lower-case path components; no tag, no digest (each
# image keeps its own name and version tag).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_PREFIX = re.compile(rf"(?:{_HOST}(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InjectError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sidecars inject",
        description="Add the sidecars (config-fetcher, log-shipper, metrics-proxy) to every "
        "workload of a Kubernetes manifest whose Pod runs nginx.",
    )
    p.add_argument("-f", "--filename", default="-", help="manifest file, or - for stdin")
    p.add_argument(
        "--kube-version",
        default=DEFAULT_KUBE_VERSION,
        help="target cluster version X.Y: 1.29+ native sidecars, older classic ones (default "
        f"{DEFAULT_KUBE_VERSION})",
    )
    p.add_argument("--parts", default=",".join(template.PARTS), help="comma-separated parts to add")
    p.add_argument(
        "--app-container", help="the app container's name (default: the one running nginx)"
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the part whose prefix NAME carries (repeatable)",
    )
    p.add_argument(
        "--reload",
        choices=("signal", "webhook"),
        default="signal",
        help="how config-fetcher reloads nginx: SIGHUP in a shared PID namespace, or a POST to "
        "CONFIG_FETCHER_RELOAD_WEBHOOK",
    )
    p.add_argument("--image-prefix", help="registry/path the parts' images are pulled from")
    return p


def kube_version(raw: str) -> tuple[int, int]:
    match = _VERSION.fullmatch(raw.strip())
    if not match:
        raise InjectError(f"--kube-version {raw!r}: expected X.Y, e.g. 1.29")
    return int(match.group(1)), int(match.group(2))


def image_prefix(raw: str | None) -> str | None:
    if raw is None:
        return None
    prefix = raw[:-1] if raw.endswith("/") else raw
    host = prefix.split("/", 1)[0]
    if not _PREFIX.fullmatch(prefix) and not (
        "/" not in prefix and re.fullmatch(rf"{_HOST}:\d+", host)  # a registry alone
    ):
        raise InjectError(
            f"--image-prefix {raw!r}: expected REGISTRY[:PORT]/PATH (lower-case path, no tag: "
            "each image keeps its name and tag, e.g. ghcr.io/you/sidecars)"
        )
    return prefix


def options(argv: Sequence[str], tpl: template.Template) -> tuple[argparse.Namespace, Options]:
    args = parser().parse_args(list(argv))
    prefix = image_prefix(args.image_prefix)
    native = kube_version(args.kube_version) >= NATIVE_SINCE
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in tpl.part_order]
    if unknown or not parts:
        raise InjectError(
            f"--parts {args.parts!r}: expected a comma-separated subset of "
            f"{','.join(tpl.part_order)}"
        )
    declared = {
        part: {
            item["name"]
            for c in [*tpl.init_containers([part]), *tpl.containers([part])]
            for item in c.get("env", [])
        }
        for part in parts
    }
    pairs = [envs.parse_pair(raw) for raw in args.env]
    routed = envs.route(pairs, parts, tpl.part_order, declared)
    webhook = "CONFIG_FETCHER_RELOAD_WEBHOOK"
    if (
        args.reload == "webhook"
        and "config-fetcher" in parts
        and webhook not in routed.get("config-fetcher", {})
    ):
        raise InjectError(f"--reload webhook needs --env {webhook}=URL")
    opts = Options(
        parts=[p for p in tpl.part_order if p in parts],
        native=native,
        reload=args.reload,
        env=routed,
        image_prefix=prefix,
        app_container=args.app_container,
        version=__version__,
    )
    for part in opts.parts:
        for container in [*tpl.init_containers([part]), *tpl.containers([part])]:
            container = customise(container, part, opts)
            env = {
                item["name"]: str(item["value"]) if "value" in item else "downward-api"
                for item in container.get("env", [])
            }
            args_ = [str(a) for a in container.get("args", [])]
            envs.check_container(part, container["name"], args_, env)
    return args, opts


def read_input(stream: BinaryIO, name: str) -> str:
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InjectError(f"{name}: more than {MAX_INPUT_BYTES // 2**20} MiB of manifests")
    try:
        return data.decode("utf-8")  # a byte order mark stays: main() writes it back
    except UnicodeDecodeError as exc:
        raise InjectError(f"{name}: not UTF-8 (byte {exc.start})") from None


def main(
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
    *,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    del environ  # the injector is configured by its flags only
    stdin = stdin or sys.stdin.buffer
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if any(a in ("-h", "--help") for a in argv):
        parser().print_help(stdout)
        return 0
    try:
        tpl = template.packaged()
        args, opts = options(argv, tpl)
        if args.filename == "-":
            text = read_input(stdin, "stdin")
        else:
            try:
                with open(args.filename, "rb") as f:
                    text = read_input(f, args.filename)
            except OSError as exc:
                raise InjectError(f"cannot read {args.filename}: {exc.strerror}") from None
        bom, text = ("\ufeff", text[1:]) if text.startswith("\ufeff") else ("", text)
        out = run(text, tpl, opts)
    except InjectError as exc:
        print(f"sidecars inject: {exc}", file=stderr)
        return 2
    try:
        stdout.write(bom + out.text)  # byte for byte: a BOM the input had, the output has
        stdout.flush()
    except OSError as exc:  # a closed pipe (`| head -1`), a full disk: exit 1, no traceback
        if not isinstance(exc, BrokenPipeError):  # the reader that left needs no message
            print(f"sidecars inject: cannot write the output: {exc.strerror}", file=stderr)
        _discard(stdout)
        return 1
    for line in out.report:
        print(line, file=stderr)
    return 0


def _discard(stream: TextIO) -> None:
    """Point a failed stream's descriptor at /dev/null, so the interpreter's flush at exit
    does not fail on what is still buffered."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
