"""The metrics-proxy's settings: one frozen object, parsed once at start."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sidecars.metrics_proxy.auth import read_secret
from sidecars.metrics_proxy.client import Target, parse_target
from sidecars.metrics_proxy.exposition import LABEL_NAME, METRIC_NAME
from sidecars.runtime.envexpand import expand, references
from sidecars.runtime.lifecycle import CommonSettings, parse_listen
from sidecars.runtime.log_format_detect import AUTO
from sidecars.runtime.nginx_log import load_log_format
from sidecars.runtime.parsers import (
    HostPort,
    parse_hostport,
    parse_positive_duration,
    parse_positive_size,
)
from sidecars.runtime.settings import SettingsError, setting

PART = "metrics-proxy"

# Prometheus client libraries' defaults, suited to request durations in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass(frozen=True)
class MergeTarget:
    """An upstream ``/metrics``; ``name`` identifies it in labels, metrics and logs."""

    name: str
    target: Target


_MERGE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_merge_target(raw: str) -> MergeTarget:
    """``[NAME=]URL``; NAME defaults to the URL's ``host:port``."""
    value = raw.strip()
    name, sep, rest = value.partition("=")
    if sep and "://" not in name and not name.startswith("unix:"):
        if not _MERGE_NAME.match(name):
            raise ValueError(f"name {name!r} may hold only letters, digits and _ . : -")
        return MergeTarget(name, parse_target(rest))
    target = parse_target(value)
    if target.socket is not None:
        return MergeTarget(Path(target.socket).name, target)
    parts = urlsplit(target.url)
    return MergeTarget(f"{parts.hostname}:{parts.port or 80}", target)


def parse_buckets(raw: str) -> tuple[float, ...]:
    """Comma-separated upper bounds in seconds, strictly increasing (``+Inf`` is implied)."""
    try:
        values = tuple(float(item) for item in raw.split(",") if item.strip())
    except ValueError:
        raise ValueError("expected comma-separated numbers such as 0.01,0.1,1") from None
    if not values:
        raise ValueError("expected at least one bucket bound")
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError("bucket bounds must be finite and greater than 0")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("bucket bounds must be strictly increasing")
    return values


# Labels that mean something to Prometheus: a histogram bucket's bound, a summary's quantile.
# Added to every series they would replace those (the series' own is kept as exported_le) and
# break every histogram and summary; ``__*`` names are Prometheus' own.
RESERVED_LABELS = frozenset({"le", "quantile"})


def check_label_name(name: str) -> str:
    if not LABEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
    if name.startswith("__"):
        raise ValueError(f"{name!r}: label names starting with '__' are reserved for Prometheus")
    if name in RESERVED_LABELS:
        raise ValueError(f"{name!r} is reserved (histogram buckets and summary quantiles carry it)")
    return name


def parse_label_pair(raw: str) -> tuple[str, str]:
    """``name=value``; the value may hold ``${VAR}`` references, expanded at start."""
    name, sep, value = raw.partition("=")
    name = name.strip()
    if not sep:
        raise ValueError("expected name=value")
    check_label_name(name)
    references(value)  # syntax errors now, not at the first scrape
    return name, value


def parse_status_label(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("code", "class"):
        raise ValueError("expected 'code' (200, 404) or 'class' (2xx, 4xx)")
    return value


def parse_start_at(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "end", "beginning"):
        raise ValueError("expected 'auto', 'end' or 'beginning'")
    return value


def parse_state_file(raw: str) -> Path | None:
    value = raw.strip()
    return Path(value) if value else None


def parse_prefix(raw: str) -> str:
    value = raw.strip()
    if value and not METRIC_NAME.match(value):
        raise ValueError("must be a valid start of a metric name, e.g. app_")
    return value


def parse_label_name(raw: str) -> str:
    value = raw.strip()
    return check_label_name(value) if value else value


def parse_secret_file(raw: str) -> Path:
    path = Path(raw.strip())
    read_secret(path)  # unreadable or empty: fail at start, not at the first scrape
    return path


def parse_readable_file(raw: str) -> Path:
    path = Path(raw.strip())
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def parse_log_format(raw: str) -> str:
    if raw.strip().lower() == AUTO:
        return AUTO
    load_log_format(raw)  # compiled again at start; here only to fail early with the reason
    return raw


def parse_access_log(raw: str) -> Path | None:
    value = raw.strip()
    return Path(value) if value else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricsProxySettings(CommonSettings):
    """Serve nginx as Prometheus metrics: stub_status under nginx-prometheus-exporter's names,
    per-status counts and latency histograms from the access log, and upstream /metrics merged
    in. /healthz and /readyz stay open when /metrics is protected."""

    # The exporter's port, so existing scrape configs and annotations keep working.
    listen: HostPort | None = setting(
        parse_hostport(":9113"),
        help="address of /metrics, /healthz and /readyz; 'off' disables the server",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    stub_status_url: Target = setting(
        help="nginx stub_status: http(s)://HOST:PORT/PATH or unix:/SOCKET[:/PATH]",
        parse=parse_target,
        metavar="URL",
    )
    stub_status_timeout: float = setting(
        5.0,
        help="per-scrape timeout for the stub_status page (nginx_up is 0 past it)",
        parse=parse_positive_duration,
    )
    access_log: Path | None = setting(
        None,
        help="nginx access log to derive per-status counts and latency histograms from",
        parse=parse_access_log,
        metavar="PATH",
    )
    log_format: str = setting(
        AUTO,
        help="the access log's format: auto (detect combined, sidecars or json from the first "
        "lines), a preset (combined, sidecars, json), a 'log_format ...;' directive or the "
        "format text",
        parse=parse_log_format,
        metavar="FORMAT",
    )
    access_log_start: str = setting(
        "auto",
        help="where to start reading an access log found at start that --state-file does not "
        "know: beginning, end, or auto (beginning with --state-file, else end)",
        parse=parse_start_at,
    )
    state_file: Path | None = setting(
        None,
        help="file keeping how far each access log was counted, so a restart neither counts "
        "lines again nor misses those written meanwhile; written atomically about every second",
        parse=parse_state_file,
        metavar="PATH",
    )
    status_label: str = setting(
        "code",
        help="label responses by exact status 'code' (404) or status 'class' (4xx)",
        parse=parse_status_label,
    )
    duration_buckets: tuple[float, ...] = setting(
        DEFAULT_BUCKETS,
        help="histogram buckets (seconds) for $request_time",
        parse=parse_buckets,
        metavar="S,S,...",
    )
    upstream_buckets: tuple[float, ...] = setting(
        DEFAULT_BUCKETS,
        help="histogram buckets (seconds) for $upstream_response_time",
        parse=parse_buckets,
        metavar="S,S,...",
    )
    merge_url: tuple[MergeTarget, ...] = setting(
        (),
        help="an upstream /metrics to serve along: [NAME=]URL",
        parse=parse_merge_target,
        repeatable=True,
        metavar="[NAME=]URL",
    )
    merge_prefix: str = setting(
        "", help="prefix added to every merged metric name, e.g. app_", parse=parse_prefix
    )
    merge_label: str = setting(
        "",
        help="label naming the upstream (its NAME) added to every merged series, e.g. upstream "
        "(not le, quantile or __*: histograms and summaries carry those)",
        parse=parse_label_name,
    )
    merge_timeout: float = setting(
        5.0,
        help="per-scrape bound for each upstream /metrics, fetch and parse, kept by the wall "
        "clock whatever the upstream sends (its up gauge is 0 past it)",
        parse=parse_positive_duration,
    )
    merge_max_bytes: int = setting(
        2 * 1024 * 1024,
        help="largest upstream /metrics body accepted (larger ones are dropped whole). Merging "
        "one costs up to ~30 MiB of memory per MiB of body (one family of short lines; ~6 for "
        "typical histograms); 2MiB keeps the worst case near 95 MiB, inside the manifest's "
        "128Mi limit (bench/metrics_proxy/RESULTS.md)",
        parse=parse_positive_size,
    )
    const_labels: tuple[tuple[str, str], ...] = setting(
        (),
        help="label added to every series: NAME=VALUE, VALUE may hold ${ENV_VAR} "
        "(NAME not le, quantile or __*)",
        parse=parse_label_pair,
        repeatable=True,
        metavar="NAME=VALUE",
    )
    bearer_token_file: Path | None = setting(
        None,
        help="require 'Authorization: Bearer <token>' on /metrics, token read from this file",
        parse=parse_secret_file,
        metavar="PATH",
    )
    basic_auth_user: str | None = setting(
        None, help="require basic auth on /metrics with this user", metavar="USER"
    )
    basic_auth_password_file: Path | None = setting(
        None,
        help="file holding the basic-auth password",
        parse=parse_secret_file,
        metavar="PATH",
    )
    tls_cert_file: Path | None = setting(
        None,
        help="serve HTTPS with this PEM certificate (chain)",
        parse=parse_readable_file,
        metavar="PATH",
    )
    tls_key_file: Path | None = setting(
        None,
        help="PEM private key for --tls-cert-file",
        parse=parse_readable_file,
        metavar="PATH",
    )

    def check(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "--tls-cert-file and --tls-key-file (METRICS_PROXY_TLS_CERT_FILE, "
                "METRICS_PROXY_TLS_KEY_FILE) must be given together"
            )
        if (self.basic_auth_user is None) != (self.basic_auth_password_file is None):
            raise ValueError(
                "--basic-auth-user and --basic-auth-password-file (METRICS_PROXY_BASIC_AUTH_USER,"
                " METRICS_PROXY_BASIC_AUTH_PASSWORD_FILE) must be given together"
            )
        names = [m.name for m in self.merge_url]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"--merge-url (METRICS_PROXY_MERGE_URL): name {duplicates[0]!r} used twice; "
                "give each upstream its own NAME=URL"
            )
        labels = [name for name, _ in self.const_labels]
        if self.merge_label:
            labels.append(self.merge_label)
        repeated = sorted({n for n in labels if labels.count(n) > 1})
        if repeated:
            raise ValueError(f"--const-labels/--merge-label: label {repeated[0]!r} given twice")


def expanded_const_labels(
    settings: MetricsProxySettings, environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    try:
        return tuple((name, expand(value, environ)) for name, value in settings.const_labels)
    except ValueError as exc:
        raise SettingsError(f"--const-labels (METRICS_PROXY_CONST_LABELS): {exc}") from None
