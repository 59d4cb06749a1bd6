"""Loki sink: the push API (``/loki/api/v1/push``), JSON, gzip, one stream per batch.

Guarantee: at-least-once delivery, and a restart re-sends nothing Loki acknowledged: Loki drops
an identical entry (same stream, timestamp and line) only while the original is still in the
stream's head block; a repeat arriving after that block was cut is stored, and while log queries
merge it, metric queries (``count_over_time``) count it. So each acknowledgement is checkpointed
before the next batch is sent (``deduplicates = False``, as for RELP): a crash repeats at most
the one batch in flight, seconds old, whose original (if Loki stored it) is still in the head
block and is dropped. Each entry's timestamp is a pure function of the line and its offset (see
timestamps.py) and its labels are the configured ones plus ``filename`` (the file's first-seen
name) and the Pod's identity (``pod``, ``namespace``), so that repeat is identical to the stored
entry, and two replicas never share a stream. Loki rejects entries older than its
out-of-order window or ``reject_old_samples_max_age`` with a 400: those batches are dropped and
counted (reason ``http_400``), which is what Loki itself decided.
"""

from __future__ import annotations

from sidecars.log_shipper.encode import loki_push_pieces
from sidecars.log_shipper.sinks.base import Batch
from sidecars.log_shipper.sinks.compression import Body, encode_pieces
from sidecars.log_shipper.sinks.httpcommon import Credentials, HttpPostSink, split_userinfo
from sidecars.log_shipper.sinks.options import SinkOptions

PUSH_PATH = "/loki/api/v1/push"


def push_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(PUSH_PATH) else base + PUSH_PATH


def credentials(url: str, options: SinkOptions) -> Credentials:
    """Bearer token or basic auth: a user from the settings or the URL, the password from its
    file, the settings or the URL (the settings check that only one of each is given)."""
    _, url_user, url_password = split_userinfo(url)
    bearer = options.loki_bearer_token_file or options.loki_bearer_token
    if bearer is not None:
        return Credentials(bearer=bearer)
    user = options.loki_username if options.loki_username is not None else url_user
    password = options.loki_password_file or options.loki_password or url_password
    return Credentials(user=user, password=password if user is not None else None)


def static_headers(options: SinkOptions) -> dict[str, str]:
    return {"X-Scope-OrgID": options.loki_tenant} if options.loki_tenant else {}


class LokiSink(HttpPostSink):
    name = "loki"
    # Loki absorbs a repeat only within its head block: every acknowledgement is made durable
    # before the next batch goes out (bench/log_shipper/RESULTS.md measures the cost).
    deduplicates = False

    def __init__(self, url: str, options: SinkOptions) -> None:
        super().__init__(push_url(url), options, static_headers(options), credentials(url, options))

    async def prepare(self, batch: Batch) -> Body:
        pieces = loki_push_pieces(batch, self.options.loki_labels)
        body, headers = await encode_pieces(pieces, self.options.gzip_level)
        headers["Content-Type"] = "application/json"
        return body, headers
