"""HTTP GET of a stub_status page or an upstream ``/metrics``: over TCP or a unix socket, with a
total timeout and a cap on the body, every failure turned into a ``FetchError`` with a short
reason (used as a metric label) and a one-line detail (used in logs)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from sidecars import __version__
from sidecars.runtime import http11


@dataclass(frozen=True)
class Target:
    """Where to GET: ``url`` is what is requested, ``socket`` the unix socket to reach it by;
    ``shown`` is how logs and errors name it (a password in the URL replaced by ``***``)."""

    shown: str
    url: str
    socket: str | None = None

    def __str__(self) -> str:
        return self.shown


def parse_target(raw: str) -> Target:
    """``http(s)://host[:port]/path``, or nginx-prometheus-exporter's unix form
    ``unix:/path/to.sock[:/request/path]`` (request path ``/`` when left out, as there)."""
    value = raw.strip()
    if value.startswith("unix:"):
        socket, _, path = value[len("unix:") :].partition(":")
        if not socket.startswith("/"):
            raise ValueError("expected unix:/absolute/path.sock[:/request/path]")
        if path and not path.startswith("/"):
            raise ValueError("the request path after the socket must start with '/'")
        return Target(value, "http://localhost" + (path or "/"), socket)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL, or unix:/path/to.sock[:/path]")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    shown = value
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        shown = parts._replace(netloc=f"{user}:***@{host}").geturl()
    return Target(shown, value)


def describe(exc: BaseException) -> str:
    """One line for a log: the exception's type and the first line of its message."""
    text = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FetchError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str


class Fetcher:
    """One target, one kept-alive connection (opened on first use, inside the running loop)."""

    def __init__(
        self, target: Target, *, timeout: float, max_bytes: int, accept: str | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.max_bytes = max_bytes
        headers = {"User-Agent": f"sidecars-metrics-proxy/{__version__}"}
        if accept:
            headers["Accept"] = accept
        self._client = http11.Client.for_url(target.url, socket=target.socket, headers=headers)

    async def get(self) -> Fetched:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.get(self.max_bytes)
        except TimeoutError:
            raise FetchError(
                "timeout", f"no complete answer from {self.target} within {self.timeout:g}s"
            ) from None
        except http11.TooLarge as exc:
            raise FetchError(
                "too_large", f"body from {self.target} over the {self.max_bytes}-byte limit ({exc})"
            ) from None
        except EOFError:
            raise FetchError("truncated", f"body from {self.target} cut off") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise FetchError("tls", f"{self.target}: {exc}") from None
        except http11.ProtocolError as exc:
            raise FetchError("protocol", f"bad answer from {self.target}: {exc}") from None
        except OSError as exc:
            detail = exc.strerror or str(exc) or type(exc).__name__
            raise FetchError("connect", f"cannot connect to {self.target}: {detail}") from None
        except Exception as exc:
            # Anything else the HTTP layer raises (its parser's own errors, a ValueError or
            # UnicodeError on odd bytes) means the peer's answer made no sense: its failure.
            detail = f"bad answer from {self.target}: {describe(exc)}"
            raise FetchError("protocol", detail) from None
        if response.status != 200:
            raise FetchError("http_status", f"HTTP {response.status} from {self.target}")
        return Fetched(response.body, response.headers.get("content-type", ""))

    async def close(self) -> None:
        self._client.close()
