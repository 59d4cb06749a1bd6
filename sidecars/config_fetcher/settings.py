"""config-fetcher settings: one typed object, parsed once (flags and CONFIG_FETCHER_* env)."""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from pathlib import Path

from sidecars.config_fetcher.envsubst import DEFAULT_FILTER
from sidecars.config_fetcher.sources import is_url, url_basename
from sidecars.runtime.lifecycle import CommonSettings, parse_listen
from sidecars.runtime.parsers import (
    HostPort,
    choice,
    parse_bool,
    parse_duration,
    parse_hex_sha256,
    parse_http_url,
    parse_nonnegative_int,
    parse_positive_duration,
    parse_positive_size,
    parse_regex,
)
from sidecars.runtime.settings import setting

PART = "config-fetcher"


def parse_ca_file(raw: str) -> Path:
    """Load it now, so a bad CA file fails at start naming the setting, not at first fetch."""
    ssl.create_default_context(cafile=raw)
    return Path(raw)


def parse_optional_path(raw: str) -> Path | None:
    return None if raw.strip().lower() in ("off", "") else Path(raw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Fetch nginx config/content, verify it and publish it atomically into a shared volume.
    --once runs as an init container (exit 0 after a verified publish, 1 at the deadline);
    --watch runs as a sidecar that keeps it fresh and reloads nginx after each change."""

    listen: HostPort | None = setting(
        HostPort("0.0.0.0", 9101),
        help="address of the health (/healthz, /readyz) and /metrics server; 'off' disables it",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    source: str = setting(
        help="http(s):// URL, or a local file or directory (e.g. a mounted ConfigMap)",
        metavar="SRC",
    )
    dest: Path = setting(
        help="directory on the shared volume to publish into", parse=Path, metavar="DIR"
    )
    once: bool = setting(
        False, help="init-container mode: publish once, then exit", parse=parse_bool
    )
    watch: bool = setting(
        False, help="sidecar mode: keep the content fresh, reload nginx", parse=parse_bool
    )
    format: str = setting(
        "auto",
        help="auto (a name ending .tar.gz/.tgz is an archive), file, or tar.gz (unpacked into DIR)",
        parse=choice("auto", "file", "tar.gz"),
    )
    filename: str | None = setting(
        None, help="name to publish a single-file source under (default: its base name)"
    )
    sha256: str | None = setting(
        None,
        help="pinned sha256 of the fetched bytes (for a directory source: of the bundle digest "
        "logged at publish)",
        parse=parse_hex_sha256,
        metavar="HEX",
    )
    # Sized for the manifests' 128Mi limit: a bundle is held in memory while it is verified
    # (the fetched bytes, the unpacked files, and with --env-subst a second copy of the text
    # files), measured at about 40 MiB + 2.8 x its unpacked size for text with --env-subst,
    # 2.1 x for binary (bench/config_fetcher/RESULTS.md, "Peak RSS against bundle size").
    max_bytes: int = setting(
        16 * 1024**2,
        help="largest source accepted, in bytes (e.g. 16MiB): what an HTTP body or local file may "
        "be, or a directory's files together. 16 MiB keeps the largest accepted bundle at about "
        "85 MiB peak RSS, within the manifests' 128Mi limit; raise the limit with it",
        parse=parse_positive_size,
        metavar="SIZE",
    )
    max_unpacked_bytes: int = setting(
        16 * 1024**2,
        help="largest an archive may unpack to (its tar stream: files, headers, padding), checked "
        "from each member's header before its data is read. Peak RSS is about 40 MiB + 3 x this "
        "(measured); 16 MiB fits the manifests' 128Mi limit with room",
        parse=parse_positive_size,
        metavar="SIZE",
    )
    deadline: float = setting(
        60.0,
        help="--once: give up (exit 1) when no verified publish after this many seconds",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    interval: float = setting(
        30.0,
        help="--watch: seconds between checks of the source",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    stale_after: float = setting(
        300.0,
        help="--watch: config_fetcher_stale turns 1 when no check succeeded for this many seconds "
        "(an alert: the origin may be down; liveness does not depend on it)",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    stuck_after: float = setting(
        300.0,
        help="--watch: /healthz fails when one attempt of the fetcher's own loop (fetch, "
        "publish, reload check; successful or not) has not finished for this many seconds",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    timeout: float = setting(
        30.0,
        help="timeout of one HTTP request, body included",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    etag_max_age: float = setting(
        300.0,
        help="--watch: trust a remembered ETag (If-None-Match) this long, then GET unconditionally "
        "once (nginx's mtime+size ETags can repeat for a same-size change in the same second)",
        parse=parse_duration,
        metavar="SECONDS",
    )
    max_redirects: int = setting(
        5, help="HTTP redirects followed at most", parse=parse_nonnegative_int
    )
    bearer_token_file: Path | None = setting(
        None,
        help="file holding a bearer token, re-read on every request",
        parse=Path,
        metavar="PATH",
    )
    ca_file: Path | None = setting(
        None,
        help="CA bundle (PEM) to verify the HTTPS origin with",
        parse=parse_ca_file,
        metavar="PATH",
    )
    env_subst: bool = setting(
        False, help="replace ${VAR} in text files with environment values", parse=parse_bool
    )
    env_subst_filter: re.Pattern[str] = setting(
        re.compile(DEFAULT_FILTER),
        help="only ${NAMES} matching this regex are replaced (nginx's lowercase $vars are not)",
        parse=parse_regex,
        metavar="REGEX",
    )
    reload_pidfile: Path | None = setting(
        None,
        help="--watch: SIGHUP the nginx master whose pid is in this file after a change",
        parse=Path,
        metavar="PATH",
    )
    reload_webhook: str | None = setting(
        None, help="--watch: POST to this URL after a change", parse=parse_http_url, metavar="URL"
    )
    nginx_error_log: Path | None = setting(
        Path("/var/log/nginx/error.log"),
        help="--watch: nginx's error log; what it appends after a reload is read (bounded) for "
        "the [emerg] of a rejected config; 'off' to rely on the worker check alone",
        parse=parse_optional_path,
        metavar="PATH",
    )
    reload_timeout: float = setting(
        10.0,
        help="--watch: how long nginx has to show it took a reload (new workers, no [emerg]) "
        "before the version counts as rejected and is rolled back",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    reload_debounce: float = setting(
        1.0,
        help="--watch: a burst of changes within this many seconds gives one reload",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    keep_versions: int = setting(
        2, help="previous versions kept beside the published one", parse=parse_nonnegative_int
    )
    retry_initial: float = setting(
        0.2,
        help="first retry delay ceiling (full jitter)",
        parse=parse_positive_duration,
        metavar="SECONDS",
    )
    retry_max: float = setting(
        10.0, help="retry delay cap", parse=parse_positive_duration, metavar="SECONDS"
    )

    @property
    def archive(self) -> bool:
        if self.format != "auto":
            return self.format == "tar.gz"
        return self.source.endswith((".tar.gz", ".tgz"))

    @property
    def publish_name(self) -> str:
        if self.filename:
            return self.filename
        return url_basename(self.source) if is_url(self.source) else Path(self.source).name

    def check(self) -> None:
        if self.once == self.watch:
            raise ValueError(
                "exactly one of --once (init container) or --watch (sidecar) is required"
            )
        if self.watch and self.stale_after <= self.interval:
            raise ValueError(
                f"--stale-after ({self.stale_after:g}s) must be longer than --interval "
                f"({self.interval:g}s), or the fetcher would look stale between two checks"
            )
        # One attempt: a fetch (--timeout), waiting out a reload being verified (a webhook's
        # --timeout plus --reload-timeout); the sleep between attempts marks progress every second.
        longest = 2 * self.timeout + self.reload_timeout + 1
        if self.watch and self.stuck_after <= longest:
            raise ValueError(
                f"--stuck-after ({self.stuck_after:g}s) must be longer than 2 x --timeout + "
                f"--reload-timeout + 1 ({longest:g}s), or /healthz would fail during a slow but "
                "healthy attempt"
            )
        if is_url(self.source):
            try:
                parse_http_url(self.source)
            except ValueError as exc:
                raise ValueError(f"--source (CONFIG_FETCHER_SOURCE): {exc}") from None
        elif "://" in self.source:
            raise ValueError(f"--source {self.source!r}: only http://, https:// and local paths")
        else:
            src, dst = os.path.abspath(self.source), os.path.abspath(self.dest)
            if src == dst or dst.startswith(src + os.sep) or src.startswith(dst + os.sep):
                raise ValueError(
                    f"--dest {self.dest} and --source {self.source} overlap: the fetcher would "
                    "read what it publishes"
                )
        if not self.archive and not self.publish_name:
            raise ValueError(f"--filename is required: --source {self.source!r} has no file name")
