"""RELP sink: acknowledged delivery into rsyslog (imrelp).

Each record is one RELP ``syslog`` command carrying its RFC 5424 message; up to ``window``
commands are in flight, and ``send()`` returns only when the server has answered ``rsp 200``
for every record of the batch. A ``rsp`` other than 200, a dropped connection, a protocol error
or no answer within ``timeout`` fails the batch as retryable and the connection is dropped; the
next ``send()`` opens a new session.

Delivery guarantee, precisely:
- **Nothing acknowledged is lost** by the shipper: offsets are checkpointed only after
  ``send()`` returned (what the receiver does with an acknowledged message is its business:
  rsyslog with a disk-assisted or direct queue keeps it).
- **Retries do not repeat acknowledged records:** records of a failed batch that the server had
  already acknowledged are remembered (by file fingerprint and offset) and skipped when the
  batch is sent again by this process.
- **Can be repeated:** records the server received but had not yet acknowledged when the
  connection broke (at most ``window``); and after a crash of the shipper, the records of the
  one batch that was in flight (at most about --batch-bytes of lines) that the server had
  already acknowledged. Nothing older repeats: RELP cannot de-duplicate, so the sink declares
  ``deduplicates = False`` and the pipeline writes each batch's acknowledgement to the state
  file before it sends the next batch (one small fsynced write per batch, whatever
  --checkpoint-interval says).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sidecars.log_shipper.sinks.base import Batch, Record, SinkError
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.log_shipper.sinks.relp_frames import (
    Frame,
    FrameParser,
    RelpProtocolError,
    encode_frame,
    next_txnr,
    open_offers,
    parse_offers,
    parse_response,
    txnr_run,
)
from sidecars.log_shipper.sinks.rfc5424 import Rfc5424Formatter
from sidecars.runtime import logs
from sidecars.runtime.parsers import parse_hostport

log = logging.getLogger("sidecars.log_shipper.relp")

_Key = tuple[str, int]  # (file fingerprint, line offset): a record's identity


def parse_relp_url(url: str) -> tuple[str, int]:
    """``host:port`` or ``relp://host:port`` -> (host, port)."""
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "relp" or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"RELP address {url!r} must be HOST:PORT or relp://HOST:PORT")
        text = parts.netloc
    try:
        address = parse_hostport(text)
    except ValueError as exc:
        raise ValueError(f"RELP address {url!r}: {exc}") from None
    if address.port == 0 or not text or text.startswith(":"):
        raise ValueError(f"RELP address {url!r} must name a host and a non-zero port")
    return address.host, address.port


def record_keys(batch: Sequence[Record]) -> list[_Key]:
    if isinstance(batch, Batch):
        return [(batch.fingerprint, offset) for offset in batch.bounds[:-1]]
    return [(record.fingerprint, record.offset) for record in batch]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch as RELP messages; the records' identities are computed only for a retry."""

    messages: list[bytes]
    batch_keys: Callable[[], list[_Key]]


@dataclass
class _Batch:
    """Acknowledgement state of the batch being sent."""

    outstanding: dict[int, int] = field(default_factory=dict)  # txnr -> index in keys
    acked: list[int] = field(default_factory=list)
    refused: str | None = None  # the first non-200 answer


class _Session:
    """One RELP connection: the reader task resolves answers by txnr."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.window = window
        self.txnr = 0
        self.parser = FrameParser()
        self.replies: dict[int, asyncio.Future[bytes]] = {}  # open/close answers
        self.batch: _Batch | None = None
        self.room = asyncio.Event()  # set when the window has room again
        self.progress = asyncio.Event()  # set on every answer
        self.broken: str | None = None
        self._sock = writer.get_extra_info("socket")
        self._quickack = self._sock is not None and hasattr(socket, "TCP_QUICKACK")
        self._ack_now()
        self.task = asyncio.create_task(self._read())

    def next(self) -> int:
        self.txnr = next_txnr(self.txnr)
        return self.txnr

    def take(self, count: int) -> Sequence[int]:
        txnrs = txnr_run(self.txnr, count)
        self.txnr = txnrs[-1]
        return txnrs

    def _ack_now(self) -> None:
        # librelp answers with small writes under Nagle's algorithm: after one "rsp" it holds
        # the next until our ACK, which the kernel delays up to 40 ms when we have nothing to
        # send (the end of every batch). Acknowledge at once instead (Linux; re-armed per read).
        if self._quickack:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self._quickack = False

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.fail("connection closed by the RELP server")
                    return
                self._ack_now()
                acks, frames = self.parser.feed_acks(data)
                if acks:
                    self._acknowledged(acks)
                for frame in frames:
                    self._dispatch(frame)
                self._wake()
        except RelpProtocolError as exc:
            self.fail(str(exc))
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.fail(f"connection lost: {exc!r}")

    def _acknowledged(self, txnrs: list[int]) -> None:
        """``rsp 200 OK`` for each of ``txnrs`` (the fast path of ``_dispatch``)."""
        batch = self.batch
        outstanding = batch.outstanding if batch is not None else {}
        acked = batch.acked if batch is not None else []
        for txnr in txnrs:
            index = outstanding.pop(txnr, None)
            if index is not None:
                acked.append(index)
                continue
            reply = self.replies.pop(txnr, None)  # a close answered with "200 OK"
            if reply is None:
                raise RelpProtocolError(f"RELP rsp for unknown txnr {txnr}")
            if not reply.done():
                reply.set_result(b"200 OK")

    def _wake(self) -> None:
        # Once per read, not per answer: waking the sender 100k times a second costs.
        batch = self.batch
        if batch is not None:
            self.progress.set()
            if len(batch.outstanding) < self.window:
                self.room.set()

    def _dispatch(self, frame: Frame) -> None:
        if frame.command == "serverclose":
            self.fail("the RELP server announced serverclose")
            return
        if frame.command != "rsp":
            raise RelpProtocolError(f"unexpected RELP command from server: {frame.command!r}")
        reply = self.replies.pop(frame.txnr, None)
        if reply is not None:
            if not reply.done():
                reply.set_result(frame.data)
            return
        batch = self.batch
        index = batch.outstanding.pop(frame.txnr, None) if batch else None
        if batch is None or index is None:
            raise RelpProtocolError(f"RELP rsp for unknown txnr {frame.txnr}")
        response = parse_response(frame.data)
        if response.ok:
            batch.acked.append(index)
        elif batch.refused is None:
            batch.refused = f"RELP server answered {response.code} {response.text}".strip()

    def fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        for reply in self.replies.values():
            if not reply.done():
                reply.set_exception(SinkError(reason, retryable=True))
        self.replies.clear()
        self.room.set()
        self.progress.set()

    async def request(self, command: str, data: bytes, limit: float) -> bytes:
        txnr = self.next()
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.replies[txnr] = reply
        self.writer.write(encode_frame(txnr, command, data))
        try:
            return await asyncio.wait_for(reply, limit)
        except TimeoutError:
            raise SinkError(
                f"no RELP answer to {command} within {limit:g}s", retryable=True
            ) from None

    async def close(self, limit: float) -> None:
        if self.broken is None:
            with contextlib.suppress(SinkError, OSError):
                await self.request("close", b"", limit)
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), limit)


class RelpSink:
    name = "relp"
    deduplicates = False

    def __init__(
        self,
        url: str,
        options: SinkOptions | None = None,
        *,
        app_name: str = "nginx",
        hostname: str | None = None,
        timeout: float = 10.0,
        window: int = 128,
        procid: str = "-",
        msgid: str | None = None,
        structured_data: bool = False,
    ) -> None:
        """``options`` (the factory's, from the settings) supplies hostname and timeout."""
        if options is not None:
            hostname, timeout = options.hostname, options.send_timeout
        self.host, self.port = parse_relp_url(url)
        if timeout <= 0:
            raise ValueError("RELP timeout must be greater than 0")
        if not 1 <= window <= 100_000:
            raise ValueError(f"RELP window {window} must be between 1 and 100000")
        self.url = url
        self.timeout = timeout
        self.window = window
        self.formatter = Rfc5424Formatter(
            app_name=app_name,
            hostname=hostname,
            procid=procid,
            msgid=msgid,
            structured=structured_data,
        )
        self._session: _Session | None = None
        self._acked_before: set[_Key] = set()  # acknowledged records of a failed batch
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            async with self._lock:
                await self._open()
        except SinkError as exc:
            # Not fatal: send() reconnects; the pipeline's retries report the outage.
            log.warning("RELP server not reachable yet", extra=logs.kv(error=exc.reason))

    async def _open(self) -> _Session:
        await self._drop()
        where = f"{self.host}:{self.port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise SinkError(f"RELP connect to {where}: {exc!r}", retryable=True) from None
        session = _Session(reader, writer, self.window)
        self._session = session
        try:
            answer = parse_response(await session.request("open", open_offers(), self.timeout))
        except RelpProtocolError as exc:
            await self._drop()
            raise SinkError(f"RELP open to {where}: {exc}", retryable=True) from None
        except SinkError:
            await self._drop()
            raise
        offers = parse_offers(answer.data)
        if not answer.ok or "syslog" not in offers.get("commands", "").split(","):
            await self._drop()
            reason = f"{answer.code} {answer.text}, commands={offers.get('commands', '')!r}"
            raise SinkError(f"RELP server {where} refused the session: {reason}", retryable=True)
        log.info(
            "RELP session open", extra=logs.kv(url=self.url, server=offers.get("relp_software"))
        )
        return session

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(min(self.timeout, 1.0) if session.broken is None else 0.1)

    async def prepare(self, batch: Sequence[Record]) -> Prepared:
        if isinstance(batch, Batch):
            # Only the identities are kept, not the batch's lines: (fingerprint, line offsets).
            fingerprint, offsets = batch.fingerprint, batch.bounds[:-1]
            return Prepared(
                self.formatter.messages(batch), lambda: [(fingerprint, o) for o in offsets]
            )
        keys = record_keys(batch)
        return Prepared(self.formatter.messages(batch), lambda: keys)

    async def send(self, batch: Sequence[Record]) -> None:
        await self.deliver(await self.prepare(batch))

    async def deliver(self, prepared: Prepared) -> None:
        async with self._lock:
            messages = prepared.messages
            keys: list[_Key] | None = None
            if self._acked_before:  # a retry: leave out what the server already acknowledged
                keys = prepared.batch_keys()
                keep = [i for i, key in enumerate(keys) if key not in self._acked_before]
                keys = [keys[i] for i in keep]
                messages = [messages[i] for i in keep]
            if messages:
                await self._send(
                    messages, lambda: keys if keys is not None else prepared.batch_keys()
                )
            self._acked_before.clear()

    async def _send(self, messages: list[bytes], keys: Callable[[], list[_Key]]) -> None:
        session = self._session
        if session is None or session.broken is not None:
            session = await self._open()
        state = _Batch()
        session.batch = state
        try:
            await self._transmit(session, state, messages)
        except (OSError, RelpProtocolError) as exc:
            session.fail(f"RELP write failed: {exc!r}")
        except SinkError as exc:
            session.fail(exc.reason)
        except asyncio.CancelledError:
            # Answers still in flight belong to no batch now: the session cannot go on.
            session.fail("send cancelled")
            raise
        finally:
            session.batch = None
        if session.broken is not None or state.refused is not None:
            # Acknowledged records need not be sent again by the retry.
            all_keys = keys()
            self._acked_before.update(all_keys[i] for i in state.acked)
            reason = session.broken or state.refused or "RELP batch failed"
            await self._drop()
            raise SinkError(
                f"{reason} ({len(state.acked)}/{len(messages)} acknowledged)", retryable=True
            )

    async def _transmit(self, session: _Session, state: _Batch, messages: list[bytes]) -> None:
        writer = session.writer
        total, sent = len(messages), 0
        while sent < total and session.broken is None:
            room = self.window - len(state.outstanding)
            if room <= 0:
                session.room.clear()
                await self._wait(session.room, session, state)
                continue
            # One write per window's worth: a syscall per message would cost more than RELP.
            end = min(total, sent + room)
            txnrs = session.take(end - sent)
            state.outstanding.update(zip(txnrs, range(sent, end), strict=True))
            writer.write(
                b"".join(
                    [
                        b"%d syslog %d %s\n" % (txnr, len(message), message)
                        for txnr, message in zip(txnrs, messages[sent:end], strict=True)
                    ]
                )
            )
            sent = end
            await asyncio.wait_for(writer.drain(), self.timeout)
        while state.outstanding and session.broken is None:
            session.progress.clear()
            await self._wait(session.progress, session, state)

    async def _wait(self, event: asyncio.Event, session: _Session, state: _Batch) -> None:
        try:
            await asyncio.wait_for(event.wait(), self.timeout)
        except TimeoutError:
            waiting = len(state.outstanding)
            raise SinkError(
                f"no RELP acknowledgement within {self.timeout:g}s ({waiting} waiting)",
                retryable=True,
            ) from None

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
