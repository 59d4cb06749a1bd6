"""``sidecars metrics-proxy``: wiring of settings, sources, the /metrics endpoint and the
access-log follower, run by the shared lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence

from sidecars.metrics_proxy.access_log import AccessLogMetrics
from sidecars.metrics_proxy.auth import Guard, secret_file
from sidecars.metrics_proxy.client import Fetcher
from sidecars.metrics_proxy.endpoint import metrics_endpoint
from sidecars.metrics_proxy.log_parsing import AccessLogParsing
from sidecars.metrics_proxy.merge import UPSTREAM_ACCEPT
from sidecars.metrics_proxy.positions import Positions, start_at
from sidecars.metrics_proxy.scrape import Scraper, Upstream
from sidecars.metrics_proxy.settings import PART, MetricsProxySettings, expanded_const_labels
from sidecars.metrics_proxy.telemetry import Telemetry
from sidecars.runtime import lifecycle, logs
from sidecars.runtime.server import Handler
from sidecars.runtime.settings import SettingsError
from sidecars.runtime.tail import Tailer

# Seconds between reads of the access log: what a scrape's counts may lag behind nginx.
ACCESS_LOG_POLL = 0.25
log = logging.getLogger("sidecars.metrics_proxy")

STUB_STATUS_MAX_BYTES = 64 * 1024  # a stub_status page is about 100 bytes


M_ARENA_MAX = -8  # glibc's mallopt(3) parameter number


def one_malloc_arena() -> bool:
    """Have glibc serve every thread from one malloc arena (as MALLOC_ARENA_MAX=1 would).

    Merged upstreams are parsed and rendered in threads (worker.py), and glibc gives each
    thread that allocates an arena of its own, keeping what is freed there for that thread:
    the peak memory then grows with every thread that once held a large body (an 8 MiB
    upstream: 132 MiB VmHWM after six scrapes, 96 MiB with one arena; bench/metrics_proxy).
    Under the GIL more arenas buy nothing. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError unless glibc
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False


def tls_context(settings: MetricsProxySettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"--tls-cert-file/--tls-key-file: cannot load {settings.tls_cert_file} with "
            f"{settings.tls_key_file}: {exc}"
        ) from None
    return context


def guard_for(settings: MetricsProxySettings) -> Guard:
    token, password = settings.bearer_token_file, settings.basic_auth_password_file
    try:
        return Guard(
            token_file=secret_file("--bearer-token-file", token) if token else None,
            basic_user=settings.basic_auth_user,
            basic_password_file=(
                secret_file("--basic-auth-password-file", password) if password else None
            ),
        )
    except ValueError as exc:  # checked when parsed; gone since
        raise SettingsError(str(exc)) from None


def live_files(tailer: Tailer) -> Callable[[], list[str | None]]:
    return lambda: [view.fingerprint for view in tailer.files()]


class MetricsProxy:
    """Built in two steps because the lifecycle starts the server (which needs the /metrics
    handler) before it runs the body (which follows the access log)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.scraper: Scraper | None = None
        self.access: AccessLogMetrics | None = None
        self.parsing: AccessLogParsing | None = None

    def build(self, ctx: lifecycle.Context) -> Handler:
        settings: MetricsProxySettings = ctx.settings
        const_labels = expanded_const_labels(settings, self.environ)
        if settings.state_file is not None and not settings.state_file.parent.is_dir():
            raise SettingsError(  # checked here, not when parsed: inject parses without volumes
                f"--state-file (METRICS_PROXY_STATE_FILE): {settings.state_file.parent} is not "
                "a directory (mount a volume there)"
            )
        telemetry = Telemetry()
        if settings.access_log is not None:
            self.access = AccessLogMetrics(
                status_label=settings.status_label,
                duration_buckets=settings.duration_buckets,
                upstream_buckets=settings.upstream_buckets,
            )
            # Sets which families the format can fill (access.logged), once it is known.
            self.parsing = AccessLogParsing(settings.log_format, self.access)
        if settings.merge_url:
            one_malloc_arena()
        upstreams = [
            Upstream(
                merge.name,
                Fetcher(
                    merge.target,
                    timeout=settings.merge_timeout,
                    max_bytes=settings.merge_max_bytes,
                    accept=UPSTREAM_ACCEPT,
                ),
            )
            for merge in settings.merge_url
        ]
        self.scraper = Scraper(
            stub_status=Fetcher(
                settings.stub_status_url,
                timeout=settings.stub_status_timeout,
                max_bytes=STUB_STATUS_MAX_BYTES,
            ),
            upstreams=upstreams,
            merge_prefix=settings.merge_prefix,
            merge_label=settings.merge_label,
            const_labels=const_labels,
            access_log=self.access,
            registry=ctx.registry,
            telemetry=telemetry,
        )
        return metrics_endpoint(self.scraper, guard_for(settings), telemetry)

    async def _follow(self, tailer: Tailer, positions: Positions | None) -> None:
        assert self.parsing is not None
        feed = self.parsing.feed
        async for chunk in tailer:
            feed([raw.decode("utf-8", "replace") for raw in chunk.lines])
            if positions is not None:
                positions.counted(chunk.fingerprint, chunk.end)

    async def body(self, ctx: lifecycle.Context) -> int:
        settings: MetricsProxySettings = ctx.settings
        assert self.scraper is not None
        tailer = follower = saver = None
        positions = Positions(settings.state_file) if settings.state_file else None
        try:
            if settings.access_log is not None:
                known = positions.load() if positions else None
                if positions is not None:
                    positions.write(dict(known or {}))  # fails now, not later (logged)
                tailer = Tailer(
                    [str(settings.access_log)],
                    positions=known,
                    start_at=start_at(  # type: ignore[arg-type]
                        settings.access_log_start, settings.state_file
                    ),
                    # Polled, not notified: nginx writes each line on its own, and a file
                    # notification per line woke this process once per request.
                    watch=False,
                    poll_interval=ACCESS_LOG_POLL,
                )
                # The first scan fixes where reading starts; only then is it "ready", so
                # requests sent after /readyz answers 200 are all counted.
                tailer.scan()
                follower = asyncio.create_task(self._follow(tailer, positions))
                if positions is not None:
                    saver = asyncio.create_task(positions.keep_saving(live_files(tailer)))
            ctx.health.set_ready(True, "serving")
            log.info(
                "serving",
                extra=logs.kv(
                    stub_status=str(settings.stub_status_url),
                    access_log=str(settings.access_log or ""),
                    merge=[m.name for m in settings.merge_url],
                ),
            )
            stopping = asyncio.create_task(ctx.stop.wait())
            waiting = {stopping} | ({follower} if follower else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if follower is not None and follower.done():
                error = follower.exception()
                log.error("access-log follower stopped", extra=logs.kv(error=repr(error)))
                return 1
            return 0
        finally:
            ctx.health.set_ready(False, "stopping")
            for task in (follower, saver):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if positions is not None and tailer is not None:
                positions.save(live_files(tailer)())  # what was counted until now
            if tailer is not None:
                await tailer.aclose()
            await self.scraper.close()


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    proxy = MetricsProxy(environ)
    return lifecycle.run(
        PART,
        MetricsProxySettings,
        proxy.body,
        argv,
        environ,
        metrics=proxy.build,
        tls=tls_context,
    )
