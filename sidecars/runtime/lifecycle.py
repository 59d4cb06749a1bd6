"""Start-up, signals and graceful drain, owned in one place for every part.

A part supplies ``body(ctx) -> exit code``. SIGTERM/SIGINT set ``ctx.stop``; the body is
expected to notice, finish in-flight work and return. If it has not returned within the drain
deadline it is cancelled; a second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from sidecars import __version__
from sidecars.runtime import logs
from sidecars.runtime.health import Health
from sidecars.runtime.parsers import (
    HostPort,
    parse_hostport,
    parse_log_level,
    parse_positive_duration,
)
from sidecars.runtime.settings import SettingsError, load, setting

if TYPE_CHECKING:
    from sidecars.runtime.server import Handler

log = logging.getLogger("sidecars.lifecycle")

EXIT_CONFIG = 2  # invalid settings, per the settings contract


def parse_listen(raw: str) -> HostPort | None:
    """``HOST:PORT``, or ``off`` to run without the health/metrics server."""
    return None if raw.strip().lower() in ("off", "") else parse_hostport(raw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """Settings every part has. A part's settings class derives from this one."""

    listen: HostPort | None = setting(
        parse_hostport(":9100"),
        help="address of the health (/healthz, /readyz) and /metrics server; 'off' disables it",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    log_level: str = setting("info", help="debug, info, warning or error", parse=parse_log_level)
    drain_timeout: float = setting(
        10.0,
        help="seconds to finish in-flight work after SIGTERM before exiting",
        parse=parse_positive_duration,
    )


@dataclasses.dataclass
class Context:
    settings: Any
    health: Health
    registry: CollectorRegistry
    stop: asyncio.Event


S = TypeVar("S", bound=CommonSettings)


def _build_info(part: str) -> Any:
    class BuildInfo:
        def collect(self) -> Any:
            family = GaugeMetricFamily(
                "sidecars_build_info", "Version of the running part.", labels=["part", "version"]
            )
            family.add_metric([part, __version__], 1.0)
            yield family

    return BuildInfo()


def run(
    part: str,
    settings_cls: type[S],
    body: Callable[[Context], Awaitable[int]],
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    stale_after: Callable[[S], float | None] = lambda s: None,
    metrics: Callable[[Context], Handler] | None = None,
    tls: Callable[[S], ssl.SSLContext | None] = lambda s: None,
) -> int:
    """``metrics`` builds a part's own /metrics handler (default: the registry's), ``tls`` the
    server's TLS context (default: plain HTTP); either may raise SettingsError."""
    try:
        settings = load(settings_cls, part, argv, environ)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_build_info(part))
        health = Health(stale_after(settings))
        ctx = Context(settings=settings, health=health, registry=registry, stop=asyncio.Event())
        ssl_context = tls(settings)
        handler = metrics(ctx) if metrics is not None else None
    except SettingsError as exc:
        print(logs.fatal_line(part, f"invalid settings: {exc}", reason=str(exc)), file=sys.stdout)
        print(f"sidecars {part}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(part, settings.log_level)
    return asyncio.run(_main(part, ctx, body, handler, ssl_context))


async def _main(
    part: str,
    ctx: Context,
    body: Callable[[Context], Awaitable[int]],
    handler: Handler | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    settings, health, registry = ctx.settings, ctx.health, ctx.registry
    loop = asyncio.get_running_loop()
    task: asyncio.Task[int] | None = None

    def on_signal(signum: int) -> None:
        if ctx.stop.is_set():
            log.warning("second signal, stopping now", extra=logs.kv(signal=signum))
            if task is not None:
                task.cancel()
            return
        log.info(
            "stopping",
            extra=logs.kv(signal=signal.Signals(signum).name, drain_timeout=settings.drain_timeout),
        )
        ctx.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    runner = None
    if settings.listen is not None:
        try:
            from sidecars.runtime import server  # only parts that listen load the server

            runner = await server.start(
                server.routes(health, registry, handler), settings.listen, ssl_context
            )
        except OSError as exc:
            log.error("cannot listen", extra=logs.kv(listen=str(settings.listen), error=str(exc)))
            return 1
    log.info("started", extra=logs.kv(version=__version__, listen=str(settings.listen)))
    try:
        task = asyncio.create_task(body(ctx))
        stopped = asyncio.create_task(ctx.stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=settings.drain_timeout)
            if not done:
                log.error(
                    "drain deadline exceeded, cancelling",
                    extra=logs.kv(drain_timeout=settings.drain_timeout),
                )
                task.cancel()
        stopped.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return 1
    finally:
        if runner is not None:
            await runner.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
