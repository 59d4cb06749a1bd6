"""config-fetcher: source -> verify -> publish -> notify.

``--once`` (init container): retry transient failures with backoff until ``--deadline``, exit 0
after a verified publish, else exit 1 with one log line giving the reason. ``--watch``
(sidecar): check every ``--interval`` (or on a file change for local sources), never exit on a
transient error, ready after the first publish, reload nginx after each changed publish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sidecars.config_fetcher import bundle as bundles
from sidecars.config_fetcher.envsubst import substitute
from sidecars.config_fetcher.errors import FetchError, VerifyError
from sidecars.config_fetcher.metrics import FetcherMetrics
from sidecars.config_fetcher.publish import Publisher
from sidecars.config_fetcher.reload import Debouncer, ReloadError, post_webhook, signal_pidfile
from sidecars.config_fetcher.settings import PART, Settings
from sidecars.config_fetcher.sources import Fetched, LocalSource, is_url
from sidecars.runtime import lifecycle
from sidecars.runtime.backoff import Backoff, Deadline
from sidecars.runtime.logs import kv

if TYPE_CHECKING:
    from sidecars.config_fetcher.http_source import HttpSource

log = logging.getLogger("sidecars.config_fetcher")


def make_source(s: Settings) -> HttpSource | LocalSource:
    if is_url(s.source):
        from sidecars.config_fetcher.http_source import HttpSource

        ssl_context = ssl.create_default_context(cafile=str(s.ca_file)) if s.ca_file else None
        return HttpSource(
            s.source,
            name=s.publish_name,
            timeout=s.timeout,
            max_bytes=s.max_bytes,
            max_redirects=s.max_redirects,
            etag_max_age=s.etag_max_age,
            token_file=s.bearer_token_file,
            ssl_context=ssl_context,
        )
    return LocalSource(Path(s.source), name=s.publish_name, max_bytes=s.max_bytes)


def build_bundle(s: Settings, fetched: Fetched, environ: Mapping[str, str]) -> bundles.Bundle:
    """Verify the fetched content and turn it into the bundle to publish (pure)."""
    if fetched.files is not None:
        bundle: bundles.Bundle = fetched.files
        pinned_over = bundles.digest(bundle)
    else:
        assert fetched.data is not None
        pinned_over = bundles.sha256_hex(fetched.data)
        if s.archive:
            bundle = bundles.from_tar_gz(fetched.data, max_unpacked=s.max_unpacked_bytes)
        else:
            bundle = bundles.single_file(fetched.name, fetched.data)
    if s.sha256 is not None and pinned_over != s.sha256:
        raise VerifyError(
            f"sha256 mismatch for {fetched.origin}: expected {s.sha256}, got {pinned_over}"
        )
    if s.env_subst:
        bundle = substitute(bundle, environ, s.env_subst_filter)
    return bundle


class Fetcher:
    def __init__(self, ctx: lifecycle.Context, environ: Mapping[str, str]) -> None:
        self.ctx = ctx
        self.s: Settings = ctx.settings
        self.environ = environ
        self.source = make_source(self.s)
        self.publisher = Publisher(self.s.dest, self.s.keep_versions)
        self.metrics = FetcherMetrics(ctx.registry)
        self.backoff = Backoff(initial=self.s.retry_initial, cap=self.s.retry_max)

    async def check(self) -> str:
        """One fetch -> verify -> publish. Returns the result label; raises FetchError."""
        started = time.monotonic()
        try:
            fetched = await self.source.fetch()
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        if fetched is None:
            return "not_modified"
        self.metrics.bytes.inc(fetched.size)
        try:
            bundle = build_bundle(self.s, fetched, self.environ)
            digest = bundles.digest(bundle)
            current = self.publisher.current()
            if current is not None and current.digest == digest:
                self._record(current.version, digest)
                return "unchanged"
            meta = {"source": fetched.origin, "etag": fetched.etag, "bytes": fetched.size}
            published = await asyncio.to_thread(self.publisher.publish, bundle, digest, meta)
        except FetchError:
            # The ETag must not be remembered for content that was never published, or the
            # next poll would get 304 and never retry.
            self.source.forget_etag()
            raise
        self._record(published.version, digest)
        log.info(
            "published",
            extra=kv(
                source=fetched.origin,
                dest=str(self.s.dest),
                version=published.version,
                sha256=digest,
                entries=len(bundle),
                bytes=fetched.size,
                etag=fetched.etag,
            ),
        )
        return "published"

    def _record(self, version: str, digest: str) -> None:
        self.metrics.published.info({"version": version, "sha256": digest})

    def _succeeded(self, result: str) -> None:
        self.metrics.checks.labels(result).inc()
        self.metrics.last_success.set(time.time())
        self.ctx.health.progress()
        if self.publisher.current() is not None:
            self.ctx.health.set_ready(True, "published")

    def _failed(self, exc: FetchError) -> None:
        self.metrics.checks.labels("failed").inc()
        self.metrics.failures.labels(exc.stage).inc()

    async def run(self) -> int:
        try:
            try:
                await asyncio.to_thread(self.publisher.prepare)
            except FetchError as exc:
                log.error("cannot publish", extra=kv(reason=exc.reason, dest=str(self.s.dest)))
                return 1
            current = self.publisher.current()
            if current is not None:
                self._record(current.version, current.digest)
            return await (self.run_once() if self.s.once else self.run_watch())
        finally:
            await self.source.close()

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Wait ``seconds`` or until stop (or ``wake``) is set, whichever comes first."""
        waiters = [asyncio.ensure_future(self.ctx.stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def run_once(self) -> int:
        deadline = Deadline(self.s.deadline)
        attempt = 0
        last: FetchError | None = None
        while True:
            try:
                # No single request may outlive the overall deadline.
                async with asyncio.timeout(max(deadline.remaining(), 0.001)):
                    result = await self.check()
            except TimeoutError:
                earlier = f" (last error: {last.reason})" if last else ""
                exc: FetchError = FetchError(
                    f"GET {self.s.source}: no verified publish within --deadline "
                    f"{self.s.deadline:g}s{earlier}",
                    transient=False,
                )
            except FetchError as error:
                exc = last = error
            else:
                self._succeeded(result)
                if result == "unchanged":
                    log.info("already published", extra=kv(dest=str(self.s.dest)))
                return 0
            self._failed(exc)
            delay = self.backoff.delay(attempt)
            if not exc.transient or delay >= deadline.remaining() or self.ctx.stop.is_set():
                why = (
                    "not retryable"
                    if not exc.transient
                    else (
                        "stopped"
                        if self.ctx.stop.is_set()
                        else f"deadline {self.s.deadline:g}s reached"
                    )
                )
                log.error(
                    f"giving up: {exc.reason}",
                    extra=kv(
                        reason=exc.reason,
                        what=exc.stage,
                        source=self.s.source,
                        attempts=attempt + 1,
                        why=why,
                    ),
                )
                return 1
            log.warning(
                "retrying",
                extra=kv(
                    reason=exc.reason, what=exc.stage, attempt=attempt + 1, delay=round(delay, 3)
                ),
            )
            self.metrics.retries.inc()
            attempt += 1
            await self._sleep(delay)

    async def reload(self) -> None:
        if self.s.reload_pidfile is not None:
            try:
                pid = await asyncio.to_thread(signal_pidfile, self.s.reload_pidfile)
            except ReloadError as exc:
                self.metrics.reloads.labels("signal", exc.result).inc()
                log.warning("reload skipped", extra=kv(method="signal", reason=exc.reason))
            else:
                self.metrics.reloads.labels("signal", "ok").inc()
                log.info("reloaded nginx", extra=kv(method="signal", pid=pid))
        if self.s.reload_webhook is not None:
            try:
                status = await post_webhook(self.s.reload_webhook, self.s.timeout)
            except ReloadError as exc:
                self.metrics.reloads.labels("webhook", exc.result).inc()
                log.warning("reload failed", extra=kv(method="webhook", reason=exc.reason))
            else:
                self.metrics.reloads.labels("webhook", "ok").inc()
                log.info("reloaded nginx", extra=kv(method="webhook", status=status))

    async def run_watch(self) -> int:
        debouncer = Debouncer(self.reload, self.s.reload_debounce)
        changed = asyncio.Event()
        helpers = [asyncio.create_task(debouncer.run())]
        if isinstance(self.source, LocalSource):
            is_dir = await asyncio.to_thread(self.source.path.is_dir)
            helpers.append(
                asyncio.create_task(self._watch_files(self.source.path, is_dir, changed))
            )
            # The watcher is armed in the task's first step (watchfiles creates its inotify
            # watches before its first await): let that step run before the first check, so a
            # change made right after /readyz turns 200 cannot slip between check and arming.
            await asyncio.sleep(0)
        attempt = 0
        try:
            while not self.ctx.stop.is_set():
                changed.clear()
                try:
                    result = await self.check()
                except FetchError as exc:
                    self._failed(exc)
                    delay = min(self.s.interval, self.backoff.delay(attempt))
                    attempt += 1
                    self.metrics.retries.inc()
                    log.warning(
                        "check failed",
                        extra=kv(reason=exc.reason, what=exc.stage, retry_in=round(delay, 3)),
                    )
                else:
                    attempt = 0
                    delay = self.s.interval
                    self._succeeded(result)
                    if result == "published":
                        debouncer.trigger()
                await self._sleep(delay, wake=changed)
            await debouncer.flush()  # a change published just before SIGTERM still reloads
            return 0
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _watch_files(self, path: Path, is_dir: bool, changed: asyncio.Event) -> None:
        """Wake the check loop on a change of the source (a ConfigMap's ..data swap is a rename
        in its directory); polling every --interval stays as the fallback."""
        from watchfiles import awatch  # imported here: only local sources pay for it

        target = path if is_dir else path.parent
        try:
            async for _ in awatch(
                target,
                stop_event=self.ctx.stop,
                debounce=50,
                step=20,
                recursive=is_dir,
                watch_filter=source_event_filter(path, is_dir, self.s.dest),
            ):
                changed.set()
        except (OSError, RuntimeError) as exc:
            log.warning(
                "file notifications unavailable, polling only",
                extra=kv(path=str(target), error=str(exc)),
            )


def source_event_filter(source: Path, is_dir: bool, dest: Path) -> Callable[[object, str], bool]:
    """Which file events concern the source. Our own publishes are never among them (a --dest
    inside the watched directory would otherwise wake us after every publish, forever); for a
    single file only that file and kubelet's ``..`` entries beside it count."""
    dest_abs = os.path.abspath(dest)

    def relevant(_change: object, raw: str) -> bool:
        event = os.path.abspath(raw)
        if event == dest_abs or event.startswith(dest_abs + os.sep):
            return False
        if is_dir:
            return True
        name = os.path.basename(event)
        return name == source.name or name.startswith("..")

    return relevant


def main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    return lifecycle.run(
        PART,
        Settings,
        lambda ctx: Fetcher(ctx, environ).run(),
        argv,
        environ,
        stale_after=lambda s: s.stale_after if s.watch else None,
    )
