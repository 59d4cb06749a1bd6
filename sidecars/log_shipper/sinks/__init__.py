"""``--sink KIND=URL`` -> a Sink.

For sink authors: the factory calls ``cls(url, options)`` with ``url: str`` (the text after
``KIND=``; None for stdout) and ``options: SinkOptions`` (sinks/options.py: send_timeout,
gzip_level, ca_file, hostname, ...), then ``await sink.start()`` once, ``await
sink.send(batch)`` per batch (a ``Batch``: a Sequence[Record] of consecutive lines of one file;
raise ``SinkError(reason, retryable=...)`` on failure), and ``await sink.close()`` at the end.
syslog and RELP are imported lazily, only when configured.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sidecars.log_shipper.sinks.base import Sink
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.runtime.parsers import parse_http_url

# kind -> (module, class)
KINDS: dict[str, tuple[str, str]] = {
    "loki": ("sidecars.log_shipper.sinks.loki", "LokiSink"),
    "http": ("sidecars.log_shipper.sinks.http", "HttpSink"),
    "syslog": ("sidecars.log_shipper.sinks.syslog", "SyslogSink"),
    "relp": ("sidecars.log_shipper.sinks.relp", "RelpSink"),
    "stdout": ("sidecars.log_shipper.sinks.stdout", "StdoutSink"),
}


@dataclass(frozen=True)
class SinkSpec:
    kind: str
    url: str | None

    @property
    def key(self) -> str:
        """The sink's name in the state file and in metric labels: kind and URL without
        credentials or query, so a secret never lands on disk or in /metrics."""
        if self.url is None:
            return self.kind
        parts = urlsplit(self.url if "://" in self.url else f"//{self.url}")
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        clean = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return f"{self.kind}={clean.removeprefix('//')}"

    def __str__(self) -> str:
        return self.key


def _check_url(kind: str, url: str) -> None:
    """The sink's own URL parser, so every address a sink would refuse is refused here, at
    start, as a bad setting (syslog and RELP are imported only when configured)."""
    if kind in ("loki", "http"):
        parse_http_url(url)
    elif kind == "syslog":
        from sidecars.log_shipper.sinks.syslog import parse_syslog_url

        parse_syslog_url(url)
    elif kind == "relp":
        from sidecars.log_shipper.sinks.relp import parse_relp_url

        parse_relp_url(url)


def parse_sink(raw: str) -> SinkSpec:
    """``loki=URL``, ``http=URL``, ``syslog=tcp://H:P``, ``relp=H:P`` or ``stdout``."""
    text = raw.strip()
    kind, sep, url = text.partition("=")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown sink kind {kind!r}; one of {', '.join(KINDS)}")
    if kind == "stdout":
        if sep and url.strip():
            raise ValueError("the stdout sink takes no URL: --sink stdout")
        return SinkSpec("stdout", None)
    url = url.strip()
    if not url:
        raise ValueError(f"sink {kind} needs a URL: --sink {kind}=URL")
    _check_url(kind, url)
    return SinkSpec(kind, url)


def build_sink(spec: SinkSpec, options: SinkOptions) -> Sink:
    module_name, class_name = KINDS[spec.kind]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec.url, options)  # type: ignore[no-any-return]
