"""log-shipper settings: one typed object, parsed once (flags and LOG_SHIPPER_* env)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from sidecars.log_shipper.sinks import SinkSpec, parse_sink
from sidecars.runtime.lifecycle import CommonSettings, parse_listen
from sidecars.runtime.parsers import (
    HostPort,
    choice,
    parse_duration,
    parse_positive_duration,
    parse_positive_size,
)
from sidecars.runtime.settings import setting

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
    return name, value.strip()


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
    """A preset name (combined, json, sidecars), ``none``, or an nginx log_format definition."""
    from sidecars.runtime.nginx_log import load_log_format

    if raw.strip().lower() in ("", "none", "off"):
        return None
    return load_log_format(raw)


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
        None,
        help="parse lines into fields: combined, json, sidecars (nginx.conf's format) or none; "
        "unparseable lines are shipped raw and counted",
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
    loki_tenant: str | None = setting(None, help="X-Scope-OrgID header for multi-tenant Loki")
    loki_username: str | None = setting(None, help="basic auth user for Loki")
    loki_password: str | None = setting(None, help="basic auth password for Loki", secret=True)
    loki_bearer_token: str | None = setting(
        None, help="bearer token for Loki (instead of basic auth)", secret=True
    )
    http_header: tuple[tuple[str, str], ...] = setting(
        (),
        help="extra header for the http sink, 'Name: value' (e.g. Authorization)",
        parse=parse_header,
        repeatable=True,
        secret=True,
        metavar="HEADER",
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

    def check(self) -> None:
        if not self.sink:
            raise ValueError("--sink (LOG_SHIPPER_SINK) needs at least one sink")
        keys = [spec.key for spec in self.sink]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"--sink: the same sink is given twice: {', '.join(duplicates)}")
        if self.format is not None and self.log_format is not None:
            raise ValueError("--format and --log-format are exclusive: give one")
        if self.loki_bearer_token and self.loki_username:
            raise ValueError("--loki-bearer-token and --loki-username are exclusive: give one")
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
        return self.format if self.format is not None else self.log_format
