"""Settings as one typed object per part, parsed once at start.

Each field of a part's frozen dataclass is declared with :func:`setting`; its flag is
``--field-name`` and its env var is ``<PART>_FIELD_NAME``. The flag wins over the env var; a
repeatable setting's env var is a comma-separated list. Anything unknown or invalid raises
:class:`SettingsError` with one line naming the setting, and the CLI exits 2. ``--help`` and the
README tables are generated from the same fields, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sidecars.runtime.parsers import parse_bool

T = TypeVar("T")

_REQUIRED = object()
_META = "sidecars.setting"

# Kubernetes injects "service links" (FOO_SERVICE_HOST, FOO_PORT_80_TCP, ...) for every Service
# in the namespace. A Service named like a part would otherwise look like misspelled settings.
_SERVICE_LINK = re.compile(
    r"^(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)$"
)


class SettingsError(ValueError):
    """A setting is unknown, missing or invalid; the message is one line naming it."""

    def __init__(self, message: str) -> None:
        # A value or a path quoted in the message may hold a line break: escape it (and any
        # other control character) so the message stays one line.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


@dataclasses.dataclass(frozen=True)
class Spec:
    help: str
    parse: Callable[[str], Any]
    repeatable: bool
    metavar: str | None
    secret: bool


def setting(
    default: Any = _REQUIRED,
    *,
    help: str,
    parse: Callable[[str], Any] = str,
    repeatable: bool = False,
    metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a settings field. Omit ``default`` for a required setting."""
    spec = Spec(help=help, parse=parse, repeatable=repeatable, metavar=metavar, secret=secret)
    kwargs: dict[str, Any] = {"metadata": {_META: spec}}
    if default is not _REQUIRED:
        if isinstance(default, list | tuple):
            kwargs["default_factory"] = lambda d=tuple(default): d
        else:
            kwargs["default"] = default
    return dataclasses.field(**kwargs)


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting as seen from the outside: its names, default and help."""

    name: str
    flag: str
    env: str
    spec: Spec
    default: Any
    required: bool

    @property
    def is_switch(self) -> bool:
        return self.spec.parse is parse_bool

    def describe_default(self) -> str:
        if self.required:
            return "(required)"
        if self.default is None or self.default == ():
            return "(none)"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(str(v) for v in self.default)
        return str(self.default)


def env_prefix(part: str) -> str:
    return part.upper().replace("-", "_") + "_"


def options(cls: type, part: str) -> list[Option]:
    prefix = env_prefix(part)
    result = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_META)
        if spec is None:
            continue
        if field.default is not dataclasses.MISSING:
            default, required = field.default, False
        elif field.default_factory is not dataclasses.MISSING:
            default, required = field.default_factory(), False
        else:
            default, required = None, True
        result.append(
            Option(
                name=field.name,
                flag="--" + field.name.replace("_", "-"),
                env=prefix + field.name.upper(),
                spec=spec,
                default=default,
                required=required,
            )
        )
    return result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise SettingsError(message)


def _build_parser(cls: type, part: str, opts: list[Option]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"sidecars {part}",
        description=(cls.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every flag is also an env var (shown in brackets); the flag wins.",
    )
    for opt in opts:
        text = f"{opt.spec.help} [{opt.env}] (default: {opt.describe_default()})"
        if opt.is_switch:
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        else:
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                action="append" if opt.spec.repeatable else "store",
                default=None,
                metavar=opt.spec.metavar or opt.name.upper(),
                help=text + (" (repeatable; env: comma-separated)" if opt.spec.repeatable else ""),
            )
    return parser


def _convert(opt: Option, raw: str, origin: str) -> Any:
    try:
        return opt.spec.parse(raw)
    except (ValueError, OSError) as exc:
        shown = "<redacted>" if opt.spec.secret else repr(raw)
        raise SettingsError(
            f"{opt.flag} ({opt.env}) from {origin}: invalid value {shown}: {exc}"
        ) from None


def load(cls: type[T], part: str, argv: Sequence[str], environ: Mapping[str, str]) -> T:
    """Parse flags and env into ``cls``; raise SettingsError on anything wrong."""
    opts = options(cls, part)
    prefix = env_prefix(part)
    known_env = {opt.env: opt for opt in opts}
    for key in sorted(environ):
        if key.startswith(prefix) and key not in known_env:
            if _SERVICE_LINK.match(key[len(prefix) :]):
                continue
            close = difflib.get_close_matches(key, known_env, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"{key}: unknown setting{hint}")

    namespace = _build_parser(cls, part, opts).parse_args(list(argv))
    values: dict[str, Any] = {}
    for opt in opts:
        flag_value = getattr(namespace, opt.name)
        if flag_value is not None:
            if opt.is_switch:
                values[opt.name] = bool(flag_value)
            elif opt.spec.repeatable:
                values[opt.name] = tuple(_convert(opt, v, "flag") for v in flag_value)
            else:
                values[opt.name] = _convert(opt, flag_value, "flag")
        elif opt.env in environ:
            raw = environ[opt.env]
            if opt.spec.repeatable:
                items = [item.strip() for item in raw.split(",") if item.strip()]
                values[opt.name] = tuple(_convert(opt, v, "env") for v in items)
            else:
                values[opt.name] = _convert(opt, raw, "env")
        elif opt.required:
            raise SettingsError(f"{opt.flag} ({opt.env}) is required")

    try:
        result = cls(**values)
        check = getattr(result, "check", None)
        if check is not None:
            check()
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return result


def markdown_table(cls: type, part: str) -> str:
    """The README table of a part's settings, generated from the same fields as --help."""
    rows = ["| flag | env | default | description |", "|---|---|---|---|"]
    for opt in options(cls, part):
        flag = f"`{opt.flag}`" + (" (repeatable)" if opt.spec.repeatable else "")
        help_text = opt.spec.help.replace("|", "\\|")
        rows.append(f"| {flag} | `{opt.env}` | `{opt.describe_default()}` | {help_text} |")
    return "\n".join(rows)
