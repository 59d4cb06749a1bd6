"""config-fetcher: source -> verify -> publish -> notify.

``--once`` (init container): retry transient failures with backoff until ``--deadline``, exit 0
after a verified publish, else exit 1 with one log line giving the reason. ``--watch``
(sidecar): check every ``--interval`` (or on a file change for local sources), never exit on a
transient error, ready as soon as a verified version is published (already at start, whatever
the origin does), reload nginx after each changed publish and roll back what nginx rejects.
Liveness is the loop's own progress (each attempt, failed or not); an origin outage shows as
``config_fetcher_stale`` and ``config_fetcher_source_up``, never as a failing probe.
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
from sidecars.config_fetcher.publish import Published, Publisher
from sidecars.config_fetcher.reload import (
    Debouncer,
    ReloadError,
    nginx_started_at,
    reload_verified,
    signal_pidfile,
)
from sidecars.config_fetcher.served import Rejected, ServedState, ServedStore
from sidecars.config_fetcher.settings import PART, Settings
from sidecars.config_fetcher.sources import Fetched, LocalSource, is_url
from sidecars.runtime import lifecycle
from sidecars.runtime.backoff import Backoff, Deadline
from sidecars.runtime.logs import kv

if TYPE_CHECKING:
    from sidecars.config_fetcher.http_source import HttpSource

log = logging.getLogger("sidecars.config_fetcher")
_IDLE_TICK = 1.0  # seconds: how often a sleeping loop marks its progress (a cheap wake-up)


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
        self.metrics = FetcherMetrics(ctx.registry, self.s.stale_after)
        self.backoff = Backoff(initial=self.s.retry_initial, cap=self.s.retry_max)
        self.store = ServedStore(self.s.dest)
        self.state = ServedState()
        # While nginx's version is unknown, the version to fall back to if it rejects a new one.
        self.rollback_to: Published | None = None
        # Publishing and a reload being verified (and maybe rolled back) never interleave.
        self.lock = asyncio.Lock()
        self.unreachable: str | None = None  # why the source could not be fetched last time
        # The published version whose files on disk no longer match its digest (found at
        # start): published again at the next check that fetches, whatever its manifest says.
        self.damaged: str | None = None

    async def check(self) -> str:
        """One fetch -> verify -> publish. Returns the result label; raises FetchError."""
        started = time.monotonic()
        try:
            fetched = await self.source.fetch()
        except FetchError as exc:
            if exc.stage == "fetch":
                self.unreachable = exc.reason
                self.metrics.source_up.set(0)
            raise
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        self.unreachable = None
        self.metrics.source_up.set(1)
        if fetched is None:
            return "not_modified"
        self.metrics.bytes.inc(fetched.size)
        try:
            bundle = build_bundle(self.s, fetched, self.environ)
            digest = bundles.digest(bundle)
            rejected = self.state.rejected
            if rejected is not None and rejected.digest == digest:
                # nginx refused exactly this content: not again until the source changes.
                return "rejected"
            if rejected is not None:
                await self._save(self.state.forget_rejected())
            current = self.publisher.current()
            if current is not None and current.digest == digest and current.version != self.damaged:
                self._record(current.version, digest)
                if await self._unconfirmed():
                    # On the volume but never seen loaded: a publish cut short after its swap
                    # (links missing), or a reload that failed. Finish both, not "unchanged".
                    for change in await asyncio.to_thread(self.publisher.repair):
                        where = kv(dest=str(self.s.dest), change=change)
                        log.warning("repaired a top-level link", extra=where)
                    return "unconfirmed"
                return "unchanged"
            meta = {"source": fetched.origin, "etag": fetched.etag, "bytes": fetched.size}
            async with self.lock:
                await asyncio.to_thread(self._observe_nginx)
                if self.state.served is None and self.rollback_to is None:
                    self.rollback_to = current
                self._pin()
                published = await asyncio.to_thread(self.publisher.publish, bundle, digest, meta)
                self.damaged = None
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

    async def _unconfirmed(self) -> bool:
        """nginx runs but is not known to have loaded ``..data`` (a crash between publish and
        the verified reload, or the first start of this fetcher beside a running nginx)."""
        current = self.publisher.current()
        if current is None or current == self.state.served or self.s.reload_pidfile is None:
            return False
        rejected = self.state.rejected
        if rejected is not None and rejected.digest == current.digest:
            return False  # refused by nginx, left there by a switch back that failed: never again
        return (
            await asyncio.to_thread(
                nginx_started_at, self.s.reload_pidfile, Path("/proc"), self.s.nginx_error_log
            )
            is not None
        )

    def _record(self, version: str, digest: str) -> None:
        self.metrics.published.info({"version": version, "sha256": digest})

    def _pin(self) -> None:
        """Garbage collection keeps what nginx serves and the rollback target."""
        self.publisher.pinned = {
            p.version for p in (self.state.served, self.rollback_to) if p is not None
        }

    async def _save(self, state: ServedState) -> None:
        self.state = state
        self._pin()
        self.metrics.set_served(state.served)
        self.metrics.rejected.set(1 if state.rejected is not None else 0)
        try:
            await asyncio.to_thread(self.store.save, state)
        except OSError as exc:
            log.warning(
                "cannot record what nginx serves", extra=kv(dest=str(self.s.dest), error=str(exc))
            )

    def _observe_nginx(self) -> bool:
        """nginx loads ``..data`` when its master starts: a master started after the last swap
        serves the current version. Returns whether the state changed (to be saved)."""
        if self.s.reload_pidfile is None:
            return False
        current = self.publisher.current()
        if current is None or self.state.served == current:
            return False
        started, swapped = (
            nginx_started_at(self.s.reload_pidfile, error_log=self.s.nginx_error_log),
            self.publisher.swapped_at(),
        )
        if started is None or swapped is None or started < swapped:
            return False
        self.state = self.state.accept(current)
        self.rollback_to = None
        return True

    def _readiness(self) -> None:
        current = self.publisher.current()
        if current is None:
            detail = "starting" if self.unreachable is None else f"starting: {self.unreachable}"
            self.ctx.health.set_ready(False, detail)
            return
        detail = f"published {current.version}"
        if current.version == self.damaged:
            detail += " (damaged on disk: its files do not match its digest; published again "
            detail += "once the source is read)"
        if self.unreachable is not None:
            detail += f"; source unreachable, serving what is published: {self.unreachable}"
        self.ctx.health.set_ready(True, detail)

    def _succeeded(self, result: str) -> None:
        self.metrics.checks.labels(result).inc()
        self.metrics.succeeded()
        self.ctx.health.progress()
        self._readiness()
        if result == "rejected":
            self.metrics.rejected.set(1)

    def _failed(self, exc: FetchError) -> None:
        self.metrics.checks.labels("failed").inc()
        self.metrics.failures.labels(exc.stage).inc()
        self.ctx.health.progress()  # a failed attempt is progress of our own loop too
        self._readiness()

    async def restore(self) -> None:
        """At every start: links consistent with ``..data``, the served state read back, and a
        version nginx rejected (a crash before the rollback finished) switched back."""
        try:
            for change in await asyncio.to_thread(self.publisher.repair):
                where = kv(dest=str(self.s.dest), change=change)
                log.warning("repaired a top-level link", extra=where)
        except FetchError as exc:  # the next publish (or start) makes them again
            log.error("cannot repair the top-level links", extra=kv(reason=exc.reason))
        state, problem = await asyncio.to_thread(self.store.load)
        if problem is not None:
            log.warning("served state not usable, set aside", extra=kv(reason=problem))
        self.state = state
        await self._settle()
        if await asyncio.to_thread(self._observe_nginx):
            await self._save(self.state)
        self._pin()
        self.metrics.set_served(self.state.served)
        self.metrics.rejected.set(1 if self.state.rejected is not None else 0)
        current = self.publisher.current()
        if current is not None:
            self._record(current.version, current.digest)
            problem = await asyncio.to_thread(self._damage, current)
            if problem is not None:
                self.damaged = current.version
                log.error(
                    "the published version is damaged on disk; publishing it again",
                    extra=kv(version=current.version, problem=problem),
                )
        # A verified version on the volume is enough to serve: ready whatever the origin does.
        self._readiness()

    def _damage(self, current: Published) -> str | None:
        """Why the files of ``current`` on disk are not the content its digest names, if they
        are not (read back through the same checks as a directory source)."""
        limit = max(self.s.max_bytes, self.s.max_unpacked_bytes)
        reader = LocalSource(self.s.dest / current.version, name="", max_bytes=limit)
        try:
            files = reader.read_tree()
        except FetchError as exc:
            return exc.reason
        found = bundles.digest(files)
        return None if found == current.digest else f"content digest {found}"

    async def run(self) -> int:
        try:
            try:
                await asyncio.to_thread(self.publisher.prepare)
                await self.restore()
            except FetchError as exc:
                log.error("cannot publish", extra=kv(reason=exc.reason, dest=str(self.s.dest)))
                return 1
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

    async def _idle(self, seconds: float, wake: asyncio.Event) -> None:
        """The wait between two attempts is where the loop belongs: it counts as progress, so
        /healthz measures only how long one attempt takes, whatever --interval is."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0 and not self.ctx.stop.is_set() and not wake.is_set():
            self.ctx.health.progress()
            await self._sleep(min(left, _IDLE_TICK), wake)
        self.ctx.health.progress()

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
                elif result == "rejected":
                    assert self.state.rejected is not None
                    log.warning(
                        "the source still holds the content nginx rejected; not publishing it",
                        extra=kv(
                            sha256=self.state.rejected.digest,
                            nginx_error=self.state.rejected.reason,
                        ),
                    )
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
        """Reload nginx onto ``..data`` and see it take it; a rejected version is rolled back."""
        if self.s.reload_pidfile is None and self.s.reload_webhook is None:
            return  # nginx is not ours to reload (it may poll the volume itself)
        async with self.lock:
            if await asyncio.to_thread(self._observe_nginx):
                await self._save(self.state)
            current = self.publisher.current()
            if current is None or current == self.state.served:
                return  # nginx already serves it (started after the swap)
            outcome = await reload_verified(
                pidfile=self.s.reload_pidfile,
                webhook=self.s.reload_webhook,
                error_log=self.s.nginx_error_log,
                http_timeout=self.s.timeout,
                verify_timeout=self.s.reload_timeout,
            )
            if outcome.result == "ok":
                self.rollback_to = None
                await self._save(self.state.accept(current))
                log.info(
                    "reloaded nginx",
                    extra=kv(
                        method=outcome.method,
                        pid=outcome.pid,
                        version=current.version,
                        verified=outcome.verified,
                        detail=outcome.detail,
                    ),
                )
            elif outcome.result == "rejected":
                await self._roll_back(current, outcome.detail, timed_out=outcome.timed_out)
            elif outcome.result == "no_target":
                # Not running yet (or gone): it loads ..data when it starts.
                log.info("reload skipped", extra=kv(method=outcome.method, reason=outcome.detail))
            else:
                log.warning("reload failed", extra=kv(method=outcome.method, reason=outcome.detail))
            # Counted once handled: a "rejected" seen here means the volume is back already.
            self.metrics.reloads.labels(outcome.method, outcome.result).inc()

    async def _roll_back(self, current: Published, nginx_error: str, timed_out: bool) -> None:
        target = self.state.served or self.rollback_to
        rejected = Rejected(digest=current.digest, version=current.version, reason=nginx_error)
        if target is None or target == current:
            await self._save(self.state.reject(rejected))
            log.error(
                "nginx rejected the new config; no accepted version to switch back to",
                extra=kv(version=current.version, nginx_error=nginx_error, result="rejected"),
            )
            return
        # Recorded first: a crash before the switch below is finished at the next start.
        # nginx kept serving ``target`` from memory: no signal needed, only the volume moves back.
        await self._save(self.state.accept(target).reject(rejected))
        self.rollback_to = None
        switched = await self._settle()
        if switched and timed_out:
            await self._signal_after_rollback(target)
        log.error(
            f"nginx rejected the new config, {'rolled back' if switched else 'NOT rolled back'}: "
            f"{nginx_error}",
            extra=kv(
                result="rejected",
                version=current.version,
                sha256=current.digest,
                nginx_error=nginx_error,
                rolled_back_to=target.version if switched else None,
            ),
        )

    async def _signal_after_rollback(self, target: Published) -> None:
        """A reload judged rejected only because nginx showed nothing in time: a slow nginx (a
        big config, a slow resolver at load) may still take the refused version after we gave
        up. Signal it again now that ``..data`` is back, so it ends on what the volume holds
        and config_fetcher_served_info says (reloading the version it serves changes nothing)."""
        assert self.s.reload_pidfile is not None  # a timeout verdict needs the master's pid
        try:
            pid = await asyncio.to_thread(
                signal_pidfile, self.s.reload_pidfile, Path("/proc"), self.s.nginx_error_log
            )
        except ReloadError as exc:
            log.warning(
                "cannot signal nginx onto the rolled-back version",
                extra=kv(version=target.version, reason=exc.reason),
            )
            return
        log.info(
            "nginx signalled onto the rolled-back version",
            extra=kv(pid=pid, version=target.version),
        )

    async def _settle(self) -> bool:
        """``..data`` holding content nginx refused goes back to the version nginx serves (a
        rollback, or one a crash cut short). Returns False only when that switch failed."""
        current = self.publisher.current()
        rejected, served = self.state.rejected, self.state.served
        if (
            current is None
            or rejected is None
            or served is None
            or current.digest != rejected.digest
            or current == served
        ):
            return True
        try:
            await asyncio.to_thread(self.publisher.switch_to, served.version)
        except FetchError as exc:
            log.error(
                "cannot switch back to the version nginx serves",
                extra=kv(version=served.version, reason=exc.reason),
            )
            return False
        self._record(served.version, served.digest)
        log.info(
            "switched back to the version nginx serves",
            extra=kv(rejected=current.version, version=served.version),
        )
        return True

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
        if await self._unconfirmed():
            debouncer.trigger()  # published before a crash or a restart, never seen loaded
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
                    if result in ("published", "unconfirmed"):
                        debouncer.trigger()
                if not debouncer.pending:
                    async with self.lock:
                        await self._settle()  # a switch back that failed is retried
                        if await asyncio.to_thread(self._observe_nginx):
                            await self._save(self.state)  # nginx (re)started on ..data
                await self._idle(delay, wake=changed)
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
        stale_after=lambda s: s.stuck_after if s.watch else None,
    )
