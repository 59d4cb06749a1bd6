"""``--env NAME=VALUE``: routed to the part whose prefix NAME carries (CONFIG_FETCHER_* to both
fetchers) and checked by that part's own settings rules, as at the part's start."""

from __future__ import annotations

import difflib
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from sidecars import docs
from sidecars.inject.errors import InjectError
from sidecars.runtime.settings import Option, SettingsError, env_prefix, load, options

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s,]+")


def parse_pair(raw: str) -> tuple[str, str]:
    name, found, value = raw.partition("=")
    if not found or not name:
        raise InjectError(f"--env {raw!r}: expected NAME=VALUE")
    return name, value


def part_of(name: str, parts: Iterable[str]) -> str | None:
    for part in parts:
        if name.startswith(env_prefix(part)):
            return part
    return None


def _option(part: str, name: str) -> Option:
    opts = {opt.env: opt for opt in options(docs.settings_class(part), part)}
    if name not in opts:
        close = difflib.get_close_matches(name, opts, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InjectError(f"--env {name}: unknown setting of {part}{hint}")
    return opts[name]


def in_pod(opt: Option) -> bool:
    """A path setting names a file inside the Pod (a Secret's, a CA bundle, a log): whether it
    exists or parses can only be judged there (its parser reads it), not here."""
    return opt.spec.metavar == "PATH"


def check(part: str, name: str, value: str) -> None:
    """Raise InjectError if ``value`` is not a valid value of the part's setting ``name``.

    A parser that touches the filesystem (a CA file) cannot judge here: the path is inside the
    Pod, so an OSError is no verdict."""
    opt = _option(part, name)
    if opt.spec.secret:
        # A manifest is committed and shown; with a shared PID namespace every container of the
        # Pod reads the others' environment too. The parts read credentials from files.
        raise InjectError(
            f"--env {name}: a credential is never written into a manifest; put it in a Secret "
            f"mounted into the Pod and give --env {name}_FILE=PATH (k8s/README.md: Secrets)"
        )
    if in_pod(opt):
        if not value.strip():
            raise InjectError(f"--env {name}: empty, expected a path")
        return
    items = [v.strip() for v in value.split(",") if v.strip()] if opt.spec.repeatable else [value]
    for url in _URL.findall(value):
        try:
            password = urllib.parse.urlsplit(url).password
        except ValueError:
            continue  # judged by the parser below
        if password is not None:
            raise InjectError(
                f"--env {name}: a password in a URL is never written into a manifest; keep the "
                "user in the URL and give the password as a file from a Secret (the part's "
                "*_PASSWORD_FILE setting)"
            )
    for item in items:
        try:
            opt.spec.parse(item)
        except OSError:
            continue
        except ValueError as exc:
            shown = "<redacted>" if opt.spec.secret else repr(item)
            raise InjectError(f"--env {name}: invalid value {shown}: {exc}") from None


def route(
    pairs: Iterable[tuple[str, str]],
    selected: list[str],
    all_parts: Iterable[str],
    declared: Mapping[str, set[str]],
) -> dict[str, dict[str, str]]:
    """part -> {NAME: VALUE}. ``declared`` maps the selected parts to the unprefixed env names
    their containers declare (NGINX_PORT...): those go to the parts that declare them."""
    routed: dict[str, dict[str, str]] = {part: {} for part in selected}
    all_parts = list(all_parts)
    for name, value in pairs:
        part = part_of(name, all_parts)
        if part is not None:
            if part not in selected:
                raise InjectError(f"--env {name}: {part} is not among --parts")
            check(part, name, value)
            routed[part][name] = value
            continue
        owners = [p for p in selected if name in declared.get(p, set())]
        if not owners:
            prefixes = ", ".join(env_prefix(p) + "*" for p in all_parts)
            raise InjectError(
                f"--env {name}: not a setting of any part ({prefixes}) and no injected container "
                "declares it"
            )
        for owner in owners:
            routed[owner][name] = value
    return routed


def check_container(part: str, name: str, args: list[str], env: Mapping[str, str]) -> None:
    """The part's whole settings as this container would start with them (its args, its literal
    env, a placeholder for Downward API values): cross-setting rules (``--stale-after`` longer
    than ``--interval``...) fail here, not in a crash-looping Pod. Values only the Pod can judge
    (files) are left out."""
    judged = {}
    prefix = env_prefix(part)
    for key, value in env.items():
        if key.startswith(prefix):
            opt = _option(part, key)
            try:
                opt.spec.parse(value)
            except OSError:
                continue
            except ValueError:
                if in_pod(opt):
                    continue  # a file only the Pod has: see in_pod
                # otherwise reported by load() below, naming the setting
        judged[key] = value
    try:
        load(docs.settings_class(part), part, args, judged)
    except SettingsError as exc:
        raise InjectError(f"{name} ({part}) would not start: {exc}") from None
