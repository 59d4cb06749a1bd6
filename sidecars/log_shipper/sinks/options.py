"""The knobs every sink constructor receives (built once from the settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecars.runtime.secrets import FileSecret


@dataclass(frozen=True)
class SinkOptions:
    send_timeout: float = 30.0  # one delivery attempt, connect to acknowledgement
    gzip_level: int = 1  # 0 sends uncompressed
    user_agent: str = "sidecars-log-shipper"
    # Loki
    loki_labels: dict[str, str] = field(default_factory=dict)  # ${ENV} already expanded
    loki_tenant: str | None = None
    loki_username: str | None = None
    loki_password: str | None = None
    loki_bearer_token: str | None = None
    loki_password_file: FileSecret[str] | None = None  # re-read when changed; see secrets.py
    loki_bearer_token_file: FileSecret[str] | None = None
    # HTTP NDJSON
    http_headers: dict[str, str] = field(default_factory=dict)
    http_header_files: tuple[FileSecret[tuple[str, str]], ...] = ()
    http_username: str | None = None
    http_password_file: FileSecret[str] | None = None
    # TLS trust for https:// (Loki, HTTP) and tls:// (syslog, RELP) URLs; None = system CAs
    ca_file: str | None = None
    # The Pod's identity ("namespace/name" or "name"), or None: prefixes the HTTP sink's
    # Idempotency-Key so two replicas' identical batches never share a key.
    pod_identity: str | None = None
    hostname: str = "-"  # RFC 5424 HOSTNAME (the Pod name when set through the Downward API)
