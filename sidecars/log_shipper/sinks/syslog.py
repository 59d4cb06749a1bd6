"""Syslog sink: RFC 5424 messages over TCP or TLS, octet-counting framing (RFC 6587).

Delivery guarantee, precisely. Syslog over TCP has no acknowledgement. ``send()`` returns once
every byte of the batch has been handed to the kernel (the transport's write buffer is empty),
which is what the pipeline then checkpoints. Therefore:

- **Can be lost:** what sat in the kernel's send buffer or in flight when the receiver died or
  the connection broke after ``send()`` returned, i.e. at most about one socket buffer of the
  last batch(es). Before each batch the sink checks whether the receiver has closed the
  connection (an rsyslog restart does) and reconnects first, so the common case, a receiver
  restarted between batches, loses nothing.
- **Can be repeated:** a batch that failed part-way (connection error, timeout) is retried as a
  whole, so its lines that did arrive are sent again; and after a crash of the shipper the
  batch that was being written (each written batch is recorded in the state file before the
  next one is sent).
Use the RELP sink where neither is acceptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from sidecars.log_shipper.sinks.base import Record, SinkError
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.log_shipper.sinks.rfc5424 import Rfc5424Formatter, octet_counted
from sidecars.runtime import logs

log = logging.getLogger("sidecars.log_shipper.syslog")


def parse_syslog_url(url: str) -> tuple[str, str, int]:
    """``tcp://host:port`` or ``tls://host:port`` -> (scheme, host, port)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("tcp", "tls"):
        raise ValueError(f"syslog URL {url!r} must be tcp://HOST:PORT or tls://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"syslog URL {url!r} has an invalid port") from None
    if not parts.hostname or port is None or port == 0:
        raise ValueError(f"syslog URL {url!r} must be tcp://HOST:PORT or tls://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"syslog URL {url!r} must have nothing after HOST:PORT")
    return parts.scheme, parts.hostname, port


class SyslogSink:
    name = "syslog"
    deduplicates = False

    def __init__(
        self,
        url: str,
        options: SinkOptions | None = None,
        *,
        app_name: str = "nginx",
        hostname: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        procid: str = "-",
        msgid: str | None = None,
        structured_data: bool = False,
    ) -> None:
        """``options`` (the factory's, from the settings) supplies hostname, CA file and
        timeout; ``ca_file`` is used for tls:// only."""
        if options is not None:
            hostname, ca_file = options.hostname, options.ca_file
            timeout = options.send_timeout
        self.scheme, self.host, self.port = parse_syslog_url(url)
        if timeout <= 0:
            raise ValueError("syslog timeout must be greater than 0")
        self.url = url
        self.timeout = timeout
        self.formatter = Rfc5424Formatter(
            app_name=app_name,
            hostname=hostname,
            procid=procid,
            msgid=msgid,
            structured=structured_data,
        )
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "tls":
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"syslog ca_file {ca_file!r} cannot be used: {exc}") from None
        self._writer: asyncio.StreamWriter | None = None
        self._raw: asyncio.WriteTransport | None = None
        self._watch: asyncio.Task[None] | None = None
        self._peer_closed = False

    async def start(self) -> None:
        try:
            await self._connect()
        except SinkError as exc:
            # Not fatal: send() reconnects; the pipeline's retries report the outage.
            log.warning("syslog receiver not reachable yet", extra=logs.kv(error=exc.reason))

    async def _connect(self) -> asyncio.StreamWriter:
        await self._disconnect()
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                # The socket's own transport: its buffer is what has not reached the kernel.
                raw = writer.transport
                raw.set_write_buffer_limits(high=0)
                if self._ssl is not None:
                    await writer.start_tls(self._ssl, server_hostname=self.host)
                    # Pause above 0 bytes, resume at 0 (high=0 would pause forever in asyncio's
                    # TLS layer, which re-pauses at size 0 >= 0).
                    writer.transport.set_write_buffer_limits(high=1, low=0)
        except ssl.SSLCertVerificationError as exc:
            raise SinkError(
                f"syslog TLS verification failed for {where}: {exc.verify_message}",
                retryable=True,
            ) from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SinkError(f"syslog connect to {where}: {exc!r}", retryable=True) from None
        self._peer_closed = False
        self._watch = asyncio.create_task(self._watch_peer(reader))
        self._writer, self._raw = writer, raw
        log.info("syslog connected", extra=logs.kv(url=self.url))
        return writer

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Until every byte of the batch is with the kernel."""
        await writer.drain()
        # Over TLS the encrypted bytes may still sit in the socket transport's buffer; it has
        # no public "drained" event, and this wait only happens when the kernel buffer is full.
        while self._raw is not None and self._raw.get_write_buffer_size() > 0:
            if self._peer_closed or writer.is_closing():
                raise ConnectionResetError("connection closed with bytes unsent")
            await asyncio.sleep(0.002)

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        # A syslog receiver never sends; EOF here means it closed (e.g. restarted). Noticing it
        # before the next write avoids writing a batch into a dead connection.
        with contextlib.suppress(OSError, ssl.SSLError):
            while await reader.read(4096):
                pass
        self._peer_closed = True

    async def _disconnect(self) -> None:
        writer, self._writer, self._raw = self._writer, None, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self.timeout)

    async def prepare(self, batch: Sequence[Record]) -> bytes:
        return b"".join([octet_counted(m) for m in self.formatter.messages(batch)])

    async def send(self, batch: Sequence[Record]) -> None:
        await self.deliver(await self.prepare(batch))

    async def deliver(self, payload: bytes) -> None:
        if not payload:
            return
        writer = self._writer
        if writer is None or self._peer_closed or writer.is_closing():
            writer = await self._connect()
        try:
            writer.write(payload)
            await asyncio.wait_for(self._flush(writer), self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self._disconnect()
            raise SinkError(
                f"syslog write to {self.host}:{self.port}: {exc!r}", retryable=True
            ) from None
        if self._peer_closed:
            # Closed while we wrote: the kernel may have discarded part of the batch.
            await self._disconnect()
            raise SinkError("syslog receiver closed the connection during a batch", retryable=True)

    async def close(self) -> None:
        await self._disconnect()
