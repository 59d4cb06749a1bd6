"""log-shipper settings: one typed object, parsed once (flags and LOG_SHIPPER_* env)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecars.log_shipper.sinks import SinkSpec, parse_sink
from sidecars.runtime.lifecycle import CommonSettings, parse_listen
from sidecars.runtime.parsers import (
    HostPort,
    choice,
    parse_duration,
    parse_positive_duration,
    parse_positive_size,
)
from sidecars.runtime.secrets import FileSecret, file_secret
from sidecars.runtime.settings import env_prefix, setting

PART = "log-shipper"

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_label(raw: str) -> tuple[str, str]:
    """``name=value``; Loki's label-name syntax, ``__`` names are reserved."""
    name, sep, value = raw.partition("=")
    name = name.strip()
    if not sep:
        raise ValueError("expected NAME=VALUE")
    if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise ValueError(
            f"label name {name!r} must match [A-Za-z_][A-Za-z0-9_]* and not start with '__'"
        )
    if name == "filename":
        raise ValueError("'filename' is set per file by the shipper")
    return name, value


def parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
        raise ValueError("expected 'Name: value'")
    return name, check_header_value(value.strip())


# A line break would end the header (and start another: header injection); other control
# characters and text beyond latin-1 cannot be sent in an HTTP/1.1 header at all.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def check_header_value(value: str) -> str:
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError("a header value holds only printable latin-1 text, no line breaks")
    return value


def parse_credential(raw: str) -> str:
    """A password or token given inline; it ends up in an HTTP header (a token as is)."""
    if not raw:
        raise ValueError("empty")
    return check_header_value(raw)


def parse_username(raw: str) -> str:
    if not raw or ":" in raw:
        raise ValueError("a basic auth user is not empty and holds no ':'")
    return check_header_value(raw)


def parse_header_file(raw: str) -> FileSecret[tuple[str, str]]:
    """One 'Name: value' header; a rotation may change its value, not its name (the name is
    checked against the other headers at start)."""
    first: list[str] = []

    def parse(text: str) -> tuple[str, str]:
        name, value = parse_header(text)
        if first and name.lower() != first[0].lower():
            raise ValueError(f"now names header {name}, was {first[0]}: restart to rename it")
        first[:] = [name]
        return name, value

    return file_secret("--http-header-file", parse)(raw)


def parse_gzip_level(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("expected 0 (off) to 9") from None
    if not 0 <= value <= 9:
        raise ValueError("expected 0 (off) to 9")
    return value


def parse_syslog_hostname(raw: str) -> str:
    from sidecars.log_shipper.sinks.rfc5424 import check_header_field

    return check_header_field("hostname", raw.strip())


_POD_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def parse_pod_identity(raw: str) -> str:
    """``auto``, ``off``, ``NAME`` or ``NAMESPACE/NAME`` (Kubernetes object-name characters)."""
    value = raw.strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    parts = value.split("/")
    if len(parts) > 2 or not all(_POD_PART.fullmatch(part) for part in parts):
        raise ValueError("expected auto, off, NAME or NAMESPACE/NAME (letters, digits, . _ -)")
    return value


def parse_ca_file(raw: str) -> str:
    """A CA bundle that TLS can load now, not at the first connection."""
    import ssl

    path = raw.strip()
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:  # ssl.SSLError is an OSError: not PEM, no certificate in it
        raise ValueError(f"cannot be used as a CA bundle: {exc.strerror or exc}") from None
    return path


def parse_format(raw: str) -> Any:
    """A preset name (combined, json, sidecars), ``auto``, ``none``, or an nginx log_format
    definition."""
    from sidecars.runtime.log_format_detect import AUTO
    from sidecars.runtime.nginx_log import load_log_format

    if raw.strip().lower() in ("", "none", "off"):
        return None
    if raw.strip().lower() == AUTO:
        return AUTO
    return load_log_format(raw)


def _named(field: str) -> str:
    return f"--{field.replace('_', '-')} ({env_prefix(PART)}{field.upper()})"


def _one_of(a: str, b: str, why: str = "give one") -> ValueError:
    return ValueError(f"{a} and {b} are exclusive: {why}")


def check_credentials(s: Settings) -> None:
    """Each credential comes from one place; a password needs a user; a token replaces one."""
    for kind in ("loki", "http"):
        urls = [urlsplit(spec.url) for spec in s.sink if spec.kind == kind and spec.url]
        url_user = any(parts.username is not None for parts in urls)
        url_password = any(parts.password is not None for parts in urls)
        in_url = f"{_named('sink')} {kind}=URL's"
        username = getattr(s, f"{kind}_username")
        passwords = [f for f in (f"{kind}_password", f"{kind}_password_file") if hasattr(s, f)]
        given = [f for f in passwords if getattr(s, f) is not None]
        if len(given) == 2:
            raise _one_of(*map(_named, given))
        if username is not None and url_user:
            raise _one_of(_named(f"{kind}_username"), f"{in_url} user")
        if given and url_password:
            raise _one_of(_named(given[0]), f"{in_url} password")
        if given and username is None and not url_user:
            raise ValueError(
                f"{_named(given[0])} needs a user: {_named(f'{kind}_username')} or "
                f"{kind}=https://USER@host"
            )
        has_user = username is not None or url_user
        if kind == "loki":
            tokens = [f for f in ("loki_bearer_token", "loki_bearer_token_file") if getattr(s, f)]
            if len(tokens) == 2:
                raise _one_of(*map(_named, tokens))
            if tokens and has_user:
                user = _named("loki_username") if username is not None else f"{in_url} user"
                raise _one_of(_named(tokens[0]), user, "a bearer token replaces basic auth")
        else:
            inline = {name.lower() for name, _ in s.http_header}
            from_files = {secret.get()[0].lower(): secret for secret in s.http_header_file}
            clash = sorted(inline & set(from_files))
            if clash:
                raise _one_of(
                    _named("http_header"), _named("http_header_file"), f"both set header {clash[0]}"
                )
            if has_user and "authorization" in inline | set(from_files):
                where = "http_header" if "authorization" in inline else "http_header_file"
                raise _one_of(
                    _named(where), "basic auth (a user)", "both set the Authorization header"
                )


def parse_optional_size(raw: str) -> int:
    """A size, or 0 / ``off`` for "not set"."""
    if raw.strip().lower() in ("0", "off", "none", ""):
        return 0
    return parse_positive_size(raw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Tail nginx's log files on the shared volume and ship every line to one or more sinks
    (loki, http NDJSON, syslog, relp, stdout), across rotation, restarts and outages. Offsets
    are checkpointed in --state-file only once a sink has acknowledged the lines."""

    listen: HostPort | None = setting(
        HostPort("0.0.0.0", 9102),
        help="address of the health (/healthz, /readyz) and /metrics server; 'off' disables it",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    paths: tuple[str, ...] = setting(
        ("/var/log/nginx/access.log", "/var/log/nginx/error.log"),
        help="glob of files to tail (e.g. /var/log/nginx/access.log*)",
        repeatable=True,
        metavar="GLOB",
    )
    state_file: Path = setting(
        help="file recording acknowledged offsets (on the shared volume, so it outlives the "
        "container); written atomically",
        parse=Path,
        metavar="PATH",
    )
    sink: tuple[SinkSpec, ...] = setting(
        help="where to ship: loki=URL, http=URL (NDJSON), syslog=tcp://H:P or tls://H:P, "
        "relp=H:P, or stdout",
        parse=parse_sink,
        repeatable=True,
        metavar="KIND=URL",
    )
    start_position: str = setting(
        "beginning",
        help="where to start in files present at the first start with no checkpoint for them "
        "(files created later are always read from their start)",
        parse=choice("beginning", "end"),
    )
    format: Any = setting(
        "auto",
        help="parse lines into fields: auto (detect combined, sidecars or json per file from its "
        "first lines), combined, json, sidecars (nginx.conf's format) or none; unparseable "
        "lines are shipped raw, counted and the first one per file logged",
        parse=parse_format,
        metavar="NAME",
    )
    log_format: Any = setting(
        None,
        help="parse lines with this nginx log_format definition (the format string, or the "
        "whole 'log_format name ...;' directive)",
        parse=parse_format,
        metavar="DEF",
    )
    max_line_bytes: int = setting(
        64 * 1024,
        help="longest line shipped as one record; longer ones are split or truncated "
        "(--long-lines) and counted",
        parse=parse_positive_size,
        metavar="SIZE",
    )
    long_lines: str = setting(
        "split",
        help="over-long lines: split (ship every byte, in pieces) or truncate (ship the head)",
        parse=choice("split", "truncate"),
    )
    batch_bytes: int = setting(
        1024 * 1024, help="a batch is sent when it holds this much", parse=parse_positive_size
    )
    batch_wait: float = setting(
        1.0,
        help="or when its first line is this old",
        parse=parse_positive_duration,
    )
    queue_bytes: int = setting(
        1024 * 1024,
        help="per sink: bytes of log lines held for the sink, queued, being encoded or being "
        "read into the next batch; reading pauses while they fill it (one batch always fits). "
        "The encoded batches in flight (one being sent, the next ready) come on top",
        parse=parse_positive_size,
        metavar="SIZE",
    )
    send_timeout: float = setting(
        30.0,
        help="one delivery attempt, from connect to acknowledgement",
        parse=parse_positive_duration,
    )
    retry_initial: float = setting(
        0.5, help="first retry delay (then doubled, with jitter)", parse=parse_positive_duration
    )
    retry_max: float = setting(
        30.0, help="longest delay between retries", parse=parse_positive_duration
    )
    gzip_level: int = setting(
        1,
        help="gzip level for HTTP and Loki bodies, 0 to send uncompressed; 1-3 use ISA-L's "
        "igzip (several times faster than zlib), 4-9 zlib",
        parse=parse_gzip_level,
    )
    checkpoint_interval: float = setting(
        1.0,
        help="acknowledged offsets of the http sink (its receiver de-duplicates by "
        "Idempotency-Key) are written at most this often (a crash re-sends at most this much, "
        "which it absorbs); those of loki, syslog, relp and stdout are written before their "
        "next batch is sent",
        parse=parse_positive_duration,
    )
    poll_interval: float = setting(
        1.0,
        help="stat the globs this often, in addition to file notifications",
        parse=parse_positive_duration,
    )
    rotate_wait: float = setting(
        5.0,
        help="keep reading a renamed-away or deleted file until it has been quiet this long",
        parse=parse_duration,
    )
    forget_after: float = setting(
        24 * 3600.0,
        help="forget the offsets of a file not seen for this long",
        parse=parse_positive_duration,
    )
    stale_after: float = setting(
        60.0,
        help="/healthz fails when the shipper's loops have not turned for this long",
        parse=parse_positive_duration,
    )
    loki_label: tuple[tuple[str, str], ...] = setting(
        (("job", "nginx"),),
        help="Loki stream label NAME=VALUE; ${VAR} is expanded from the environment (Downward "
        "API); 'filename' is added per file",
        parse=parse_label,
        repeatable=True,
        metavar="NAME=VALUE",
    )
    loki_tenant: str | None = setting(
        None, help="X-Scope-OrgID header for multi-tenant Loki", parse=check_header_value
    )
    # Credentials: each inline form also as a file (a mounted Secret), re-read when it changes.
    # The inline forms are visible in /proc/<pid>/environ or cmdline (see README, Security).
    loki_username: str | None = setting(
        None,
        help="basic auth user for Loki (or give it in the URL: loki=https://USER@host)",
        parse=parse_username,
    )
    loki_password: str | None = setting(
        None,
        help="basic auth password for Loki (prefer --loki-password-file)",
        parse=parse_credential,
        secret=True,
    )
    loki_password_file: FileSecret[str] | None = setting(
        None,
        help="file holding the basic auth password for Loki, re-read when it changes",
        parse=file_secret("--loki-password-file", parse_credential),
        metavar="PATH",
    )
    loki_bearer_token: str | None = setting(
        None,
        help="bearer token for Loki, instead of basic auth (prefer --loki-bearer-token-file)",
        parse=parse_credential,
        secret=True,
    )
    loki_bearer_token_file: FileSecret[str] | None = setting(
        None,
        help="file holding the bearer token for Loki, re-read when it changes",
        parse=file_secret("--loki-bearer-token-file", parse_credential),
        metavar="PATH",
    )
    http_header: tuple[tuple[str, str], ...] = setting(
        (),
        help="extra header for the http sink, 'Name: value' (secrets: --http-header-file)",
        parse=parse_header,
        repeatable=True,
        secret=True,
        metavar="HEADER",
    )
    http_header_file: tuple[FileSecret[tuple[str, str]], ...] = setting(
        (),
        help="file holding one extra header for the http sink, 'Name: value' (e.g. "
        "'Authorization: Bearer ...'), re-read when it changes; repeat for more headers",
        parse=parse_header_file,
        repeatable=True,
        metavar="PATH",
    )
    http_username: str | None = setting(
        None,
        help="basic auth user for the http sink (or give it in the URL: https://USER@host)",
        parse=parse_username,
    )
    http_password_file: FileSecret[str] | None = setting(
        None,
        help="file holding the basic auth password for the http sink, re-read when it changes",
        parse=file_secret("--http-password-file", parse_credential),
        metavar="PATH",
    )
    ca_file: str | None = setting(
        None,
        help="CA bundle (PEM) to verify https:// Loki/HTTP and tls:// syslog sinks with "
        "(default: system CAs)",
        parse=parse_ca_file,
        metavar="PATH",
    )
    hostname: str | None = setting(
        None,
        help="HOSTNAME field of syslog/RELP messages, printable ASCII without blanks (default: "
        "$HOSTNAME, the Pod name, with other characters replaced by '_')",
        parse=parse_syslog_hostname,
    )
    pod_identity: str = setting(
        "auto",
        help="the Pod's identity, in each HTTP batch's Idempotency-Key and as Loki's 'pod' (and "
        "'namespace') stream labels unless --loki-label sets them, so replicas never collide: "
        "auto ($POD_NAMESPACE/$POD_NAME from the Downward API, else $HOSTNAME, the Pod's name), "
        "NAMESPACE/NAME, NAME, or off",
        parse=parse_pod_identity,
        metavar="ID",
    )

    rotate_bytes: int = setting(
        0,
        help="rotate a tailed file once it is this large (e.g. 64MiB): rename it to "
        "NAME.<UTC time>, then SIGUSR1 the nginx master (shared PID namespace) to reopen its logs; "
        "the renamed file is deleted once every sink has acknowledged all of it. 0: off",
        parse=parse_optional_size,
        metavar="SIZE",
    )
    max_held_bytes: int = setting(
        0,
        help="cap on log bytes kept on the volume for lagging sinks (rotated files plus the "
        "unacknowledged part of the live ones); past it the oldest rotated files are deleted "
        "and their unread bytes counted as dropped (reason retention). Needs --rotate-bytes. "
        "0: no cap",
        parse=parse_optional_size,
        metavar="SIZE",
    )
    nginx_pidfile: Path | None = setting(
        None,
        help="--rotate-bytes: the nginx master's pid file; default: find the master in /proc "
        "(the one holding the rotated file open)",
        parse=Path,
        metavar="PATH",
    )

    def check(self) -> None:
        if not self.sink:
            raise ValueError("--sink (LOG_SHIPPER_SINK) needs at least one sink")
        keys = [spec.key for spec in self.sink]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"--sink: the same sink is given twice: {', '.join(duplicates)}")
        if self.format not in (None, "auto") and self.log_format is not None:
            raise ValueError("--format and --log-format are exclusive: give one")
        check_credentials(self)
        if self.max_held_bytes and not self.rotate_bytes:
            raise ValueError(
                "--max-held-bytes needs --rotate-bytes: only files the shipper rotated are "
                "deleted to keep under the cap"
            )
        if self.max_held_bytes and self.max_held_bytes < 2 * self.rotate_bytes:
            raise ValueError(
                "--max-held-bytes must be at least twice --rotate-bytes (the live file grows "
                "to --rotate-bytes before it is rotated, and one rotated file is kept)"
            )
        if not self.paths:
            raise ValueError("--paths needs at least one glob")
        longest_wait = max(self.send_timeout, self.retry_max)
        if self.stale_after <= longest_wait:
            # A sender retrying a sink that is down turns at least that often: a shorter
            # --stale-after would fail liveness for a sink outage.
            raise ValueError(
                f"--stale-after ({self.stale_after:g}s) must be longer than --send-timeout and "
                f"--retry-max ({longest_wait:g}s)"
            )

    @property
    def parser(self) -> Any:
        """A compiled parser, "auto" (detect per file), or None (no parsing)."""
        if self.log_format is not None:
            return self.log_format
        return self.format
