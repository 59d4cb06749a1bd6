"""HTTP NDJSON sink: POST each batch as newline-delimited JSON (gzip), with an idempotency key.

Guarantee: at-least-once; with a receiver that de-duplicates by ``Idempotency-Key``, exactly
once. The key is ``[<namespace>/<pod>/]<fingerprint>:<start>-<end>`` of the batch in its file,
and a batch re-sent after a restart covers the same lines (its boundary was made durable before
the first send), so it carries the same key. The Pod's identity keeps two replicas whose logs
hold byte-identical lines at the same offsets (nginx's start-up lines, identical probe
requests) from sharing a key, which a de-duplicating receiver would drop as a repeat.
"""

from __future__ import annotations

from sidecars.log_shipper.encode import ndjson_pieces
from sidecars.log_shipper.sinks.base import Batch
from sidecars.log_shipper.sinks.compression import Body, encode_pieces
from sidecars.log_shipper.sinks.httpcommon import Credentials, HttpPostSink, split_userinfo
from sidecars.log_shipper.sinks.options import SinkOptions


class HttpSink(HttpPostSink):
    name = "http"

    def __init__(self, url: str, options: SinkOptions) -> None:
        _, url_user, url_password = split_userinfo(url)
        user = options.http_username if options.http_username is not None else url_user
        password = options.http_password_file or url_password
        auth = Credentials(
            user=user,
            password=password if user is not None else None,
            headers=options.http_header_files,
        )
        super().__init__(url, options, dict(options.http_headers), auth)
        self._key_prefix = f"{options.pod_identity}/" if options.pod_identity else ""

    async def prepare(self, batch: Batch) -> Body:
        body, headers = await encode_pieces(ndjson_pieces(batch), self.options.gzip_level)
        headers["Content-Type"] = "application/x-ndjson"
        headers["Idempotency-Key"] = self._key_prefix + batch.key
        return body, headers
