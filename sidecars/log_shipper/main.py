"""log-shipper: start the sink pipelines, keep the state file, drain on SIGTERM.

Delivery guarantees, per sink (what a destination sees across crashes, restarts and outages):

- Offsets are recorded per sink and only after that sink acknowledged the lines (or rejected
  them with a non-retryable answer, which is logged and counted as dropped). A SIGKILL loses
  nothing acknowledged; on restart each sink re-reads from its own offset. One batch at a time
  is sent to a sink (the next one is only encoded meanwhile), so "the batch in flight" below is
  one batch of at most about --batch-bytes of lines.
- What a crash repeats depends on whether the destination can absorb a repeat. For http,
  acknowledgements are written every --checkpoint-interval, so a restart re-sends the batch in
  flight plus at most --checkpoint-interval of acknowledged batches, and a receiver honouring
  Idempotency-Key drops them. For loki, syslog, relp and stdout, each acknowledgement is written
  before the next batch is sent, so a restart re-sends at most the batch in flight at the crash.
- loki: at-least-once; nothing acknowledged is re-sent. The batch in flight may be: its entries
  are identical (same labels, deterministic timestamps), and Loki drops them while the originals
  are in the stream's head block (sinks/loki.py says when it does not).
- http: at-least-once; exactly-once at a receiver that de-duplicates by Idempotency-Key
  (``[<namespace>/<pod>/]<fingerprint>:<start>-<end>``): a batch's boundaries are made durable
  before its first send, so a re-send after a restart is the same batch under the same key. A
  receiver that ignores the key gets the repeats described above.
- Replicas: the Pod's identity (--pod-identity) is in every Idempotency-Key and Loki stream, so
  two Pods whose files hold identical lines at identical offsets never share a key or a stream.
- relp: every message is acknowledged; a crash repeats at most the acknowledged part of the
  batch in flight (and a broken connection at most the RELP window: see sinks/relp.py).
- syslog: no acknowledgements at all: see sinks/syslog.py for what can be lost or repeated.
- stdout: at-least-once; a crash may write the batch in flight twice.
- One slow or hanging sink does not stall another: each sink has its own reader, queue and
  offsets. A lagging sink's unread lines stay on disk (rotated and deleted files are held open
  until that sink's reader has read them), so it loses nothing while it is down, at the cost of
  disk space held for it.
- A corrupted or truncated state file is moved aside (``<state>.corrupt-<time>``) with an error
  log line, and shipping starts over from --start-position (default: the beginning of every
  file): nothing is lost, every line present is sent again. Loki drops the identical entries
  still in its head blocks and stores the rest again; HTTP receivers see new batch boundaries,
  hence new keys, and get the lines twice; stdout/syslog/RELP repeat them. To avoid the
  repeat, restore the state file or start with --start-position end (which skips lines written
  while the shipper was down).
- SIGTERM (the final drain): every file is read to its end, and when the nginx master is visible
  through the Pod's shared PID namespace, only once it has exited (runtime/nginx_exit.py), so
  the lines nginx writes while it stops are shipped too; then open batches are flushed, queues
  drain and the state is written, all within --drain-timeout. What could not be delivered by
  then is logged with its byte count per sink and sent after a restart (if the volume survives).
- Probes: /readyz is 200 once the state is loaded and written (reading starts), and
  never depends on a sink: a sink outage is log_shipper_sink_up 0 and the last-success time,
  for an alert. /healthz fails only when one of the shipper's own loops (each sink's reader and
  sender, the state keeper) has not turned for --stale-after; a failing send is a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sidecars.log_shipper.formats import LineFormats
from sidecars.log_shipper.metrics import PipelineCollector, ShipperMetrics
from sidecars.log_shipper.pipeline import SinkPipeline
from sidecars.log_shipper.rotate import RotationLock, RotationLocked, Rotator, rotated_patterns
from sidecars.log_shipper.settings import PART, Settings
from sidecars.log_shipper.sinks import build_sink
from sidecars.log_shipper.sinks.options import SinkOptions
from sidecars.log_shipper.sinks.rfc5424 import clean_header_field
from sidecars.log_shipper.state import Checkpointer
from sidecars.runtime import lifecycle
from sidecars.runtime.backoff import Deadline
from sidecars.runtime.envexpand import expand as expand_env
from sidecars.runtime.logs import kv
from sidecars.runtime.nginx_exit import WriterWatch
from sidecars.runtime.secrets import make_undumpable

log = logging.getLogger("sidecars.log_shipper")

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
M_MMAP_THRESHOLD = -3  # glibc's mallopt(3) parameter number
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept
# Below this batch size the fixed threshold costs more than it saves: with the Pod's 256 KiB
# batches it saved 0.7 MiB for 20 % more CPU per line (every large buffer a fresh mapping to
# fault in); with 1 MiB batches 3.7 MiB for 4 % (bench/pod_tax/TRIED.md).
MMAP_THRESHOLD_FROM_BATCH = 1024 * 1024


def wants_fixed_mmap_threshold(batch_bytes: int) -> bool:
    return batch_bytes >= MMAP_THRESHOLD_FROM_BATCH


def fixed_mmap_threshold() -> bool:
    """Keep glibc serving blocks of 128 KiB and more by mmap, unmapped again when freed.

    glibc raises that threshold each time such a block is freed (up to 32 MiB); from then on
    every batch's 128 KiB reads and joined chunks and its gzip body come from the heap, where
    they fragment it and the freed room stays in RSS: about 0.5 MiB of a 1 GiB backlog drain's
    peak (bench/log_shipper/RESULTS.md). Setting the threshold turns that adjustment off.
    False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError unless glibc
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def pod_identity(setting: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(namespace, name) of the Pod, either possibly None: from --pod-identity, else the
    Downward API's POD_NAMESPACE/POD_NAME, else $HOSTNAME (a Pod's hostname is its name)."""
    if setting == "off":
        return None, None
    if setting != "auto":
        namespace, _, name = setting.rpartition("/")
        return namespace or None, name

    def clean(value: str) -> str | None:
        # From the environment, unchecked: it goes into an HTTP header and a label, so anything
        # but an object name's characters (CR, LF, '/', blanks...) becomes '_'.
        return _UNSAFE_ID.sub("_", value.strip())[:253] or None

    name = clean(environ.get("POD_NAME", "")) or clean(environ.get("HOSTNAME", ""))
    namespace = clean(environ.get("POD_NAMESPACE", ""))
    return (namespace if name else None), name


def sink_options(settings: Settings, environ: Mapping[str, str]) -> SinkOptions:
    """ValueError (naming the setting) for a ${VAR} that is not set."""
    labels = {}
    for name, value in settings.loki_label:
        try:
            labels[name] = expand_env(value, environ)
        except ValueError as exc:
            raise ValueError(f"--loki-label {name}: {exc}") from None
    namespace, pod = pod_identity(settings.pod_identity, environ)
    # Replicas must not share Loki streams: identical lines at identical offsets get identical
    # timestamps, and Loki would keep one of the two. Labels given explicitly win.
    if pod is not None:
        labels.setdefault("pod", pod)
        if namespace is not None:
            labels.setdefault("namespace", namespace)
    return SinkOptions(
        send_timeout=settings.send_timeout,
        gzip_level=settings.gzip_level,
        loki_labels=labels,
        loki_tenant=settings.loki_tenant,
        loki_username=settings.loki_username,
        loki_password=settings.loki_password,
        loki_bearer_token=settings.loki_bearer_token,
        http_headers=dict(settings.http_header),
        loki_password_file=settings.loki_password_file,
        loki_bearer_token_file=settings.loki_bearer_token_file,
        http_header_files=settings.http_header_file,
        http_username=settings.http_username,
        http_password_file=settings.http_password_file,
        ca_file=settings.ca_file,
        pod_identity=None if pod is None else "/".join(filter(None, (namespace, pod))),
        # $HOSTNAME is the Pod's name; anything RFC 5424 does not allow becomes "_".
        hostname=settings.hostname or clean_header_field("hostname", environ.get("HOSTNAME", "")),
    )


def _invalid(reason: str) -> int:
    """A setting found invalid after start-up: the same one line as the settings loader's."""
    log.error("invalid settings", extra=kv(reason=reason))
    print(f"sidecars {PART}: {reason}", file=sys.stderr)
    return lifecycle.EXIT_CONFIG


class Shipper:
    def __init__(self, ctx: lifecycle.Context, environ: Mapping[str, str]) -> None:
        self.ctx = ctx
        self.settings: Settings = ctx.settings
        self.environ = environ
        self.pipelines: list[SinkPipeline] = []
        self.rotator: Rotator | None = None
        self.rotation_lock: RotationLock | None = None  # held while running (rotate.py)

    async def run(self) -> int:
        settings = self.settings
        try:
            options = sink_options(settings, self.environ)
        except ValueError as exc:
            return _invalid(str(exc))
        sinks = []
        for spec in settings.sink:
            try:
                sinks.append((spec, build_sink(spec, options)))
            except ValueError as exc:  # a check only the sink itself makes: still a setting
                return _invalid(f"--sink {spec.key}: {exc}")
        checkpointer = Checkpointer(
            settings.state_file, [spec.key for spec in settings.sink], settings.forget_after
        )
        checkpointer.load()
        if not await checkpointer.write():
            log.error("state file is not writable", extra=kv(state_file=str(settings.state_file)))
            return 1
        if settings.rotate_bytes:
            try:
                self.rotation_lock = RotationLock.take(settings.paths)
            except RotationLocked as exc:
                return _invalid(str(exc))
        # Started means: the state is loaded and writable. Never a sink's health, nor even a
        # connection to it (sinks connect at start: a black-holed one must not delay this).
        self.ctx.health.set_ready(True, f"started; state loaded from {settings.state_file}")
        metrics = ShipperMetrics(self.ctx.registry)
        formats = LineFormats(settings.parser)
        # With rotation on, the readers also follow the rotated files (after a restart too).
        patterns = [*settings.paths, *rotated_patterns(settings.paths)]
        for spec, sink in sinks:
            pipeline = SinkPipeline(
                spec,
                sink,
                settings,
                checkpointer,
                metrics,
                formats=formats,
                patterns=patterns if settings.rotate_bytes else None,
                health=self.ctx.health,
            )
            self.pipelines.append(pipeline)
        self.rotator = (
            Rotator(settings, checkpointer, lambda: self.pipelines, metrics, self.rotation_lock)
            if settings.rotate_bytes
            else None
        )
        self.ctx.registry.register(PipelineCollector(lambda: self.pipelines, checkpointer))
        started = []
        try:
            for pipeline in self.pipelines:
                await pipeline.sink.start()
                started.append(pipeline)
            return await self._ship(checkpointer)
        finally:
            for pipeline in started:
                with contextlib.suppress(Exception):
                    await pipeline.sink.close()
            for pipeline in self.pipelines:
                await pipeline.tailer.aclose()

    async def _ship(self, checkpointer: Checkpointer) -> int:
        settings = self.settings
        reading_stop = asyncio.Event()
        watch = WriterWatch(settings.paths)
        readers = [asyncio.create_task(p.read(reading_stop, watch.gone)) for p in self.pipelines]
        senders = [asyncio.create_task(p.send(reading_stop)) for p in self.pipelines]
        keeper = asyncio.create_task(self._keep_state(checkpointer))
        rotating = asyncio.create_task(self.rotator.run()) if self.rotator else None
        log.info(
            "shipping",
            extra=kv(
                paths=list(settings.paths),
                sinks=[p.key for p in self.pipelines],
                state_file=str(settings.state_file),
            ),
        )
        stopped = asyncio.create_task(self.ctx.stop.wait())
        workers = {*readers, *senders}
        await asyncio.wait({stopped, *workers}, return_when=asyncio.FIRST_COMPLETED)
        for task in workers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("pipeline failed", exc_info=task.exception())
        # Drain: leave a margin inside the lifecycle's deadline for the final state write.
        drain = Deadline(max(0.0, settings.drain_timeout - min(1.0, settings.drain_timeout / 5)))
        started = time.monotonic()
        reading_stop.set()
        pending = {task for task in workers if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=drain.remaining())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._report_drain(pending, time.monotonic() - started, watch)
        stopped.cancel()
        if rotating is not None:
            rotating.cancel()
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        ok = await checkpointer.write()
        log.info("stopped", extra=kv(state_written=ok))
        failed = any(t.done() and not t.cancelled() and t.exception() for t in workers)
        return 1 if failed and not self.ctx.stop.is_set() else 0

    def _report_drain(
        self, cut_short: set[asyncio.Task[None]], seconds: float, watch: WriterWatch
    ) -> None:
        """What the final drain left undelivered, per sink, in bytes of the files."""
        behind = {p.key: sum(p.lag().values()) for p in self.pipelines}
        fields = {"undelivered_bytes": behind, "seconds": round(seconds, 3)}
        if cut_short:
            log.warning(
                "drain deadline reached; undelivered lines stay on the volume for a restart",
                extra=kv(
                    **fields,
                    drain_timeout=self.settings.drain_timeout,
                    # Still writing at the deadline: its last lines may not even be read yet.
                    nginx_still_running=watch.pids is not None and watch.exited_at is None,
                ),
            )
        elif any(behind.values()):  # only an unterminated last line can be left
            log.info("drained; what is left has no newline yet", extra=kv(**fields))
        else:
            log.info("drained: every line of every file was delivered", extra=kv(**fields))

    async def _keep_state(self, checkpointer: Checkpointer) -> None:
        """Write acknowledged offsets every --checkpoint-interval."""
        loop = self.ctx.health.loop("state")
        while True:
            open_now: set[str] = set()
            for pipeline in self.pipelines:
                open_now |= pipeline.open_fingerprints()
            checkpointer.seen(open_now, time.time())
            for pipeline in self.pipelines:
                for fingerprint in [f for f in pipeline.stampers if f not in checkpointer.streams]:
                    del pipeline.stampers[fingerprint]
            await checkpointer.write()  # a failure is logged and counted (state_writes)
            loop.tick()
            await asyncio.sleep(self.settings.checkpoint_interval)


def main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    # First: nginx, same UID in the same PID namespace, must not read this process's
    # environment or walk into its filesystem (its Secret volume) through /proc/<pid>.
    make_undumpable()

    def body(ctx: lifecycle.Context) -> Any:
        if wants_fixed_mmap_threshold(ctx.settings.batch_bytes):
            fixed_mmap_threshold()
        return Shipper(ctx, environ).run()

    return lifecycle.run(PART, Settings, body, argv, environ, stale_after=lambda s: s.stale_after)
