"""Listening sockets that unauthenticated strangers cannot exhaust.

Each listener (client, federation, metrics) has its own connection cap: a connection past the cap is
accepted and closed at once (its descriptor freed), so filling one listener never locks out the
others. A connection that has not sent a complete request head within `header_timeout_s` is closed.
At start the soft file limit is raised to the hard one, and asyncio's "socket.accept() out of system
resource" message (logged thousands of times a second when descriptors run out) is rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("p2pvalue.listeners")

HEAD_END = b"\r\n\r\n"


@dataclass
class ConnectionGuard:
    """The cap and the header timeout of one listener, and its counters."""

    listener: str
    max_connections: int
    header_timeout_s: float
    on_refused: Callable[[str], None] | None = None  # (reason) -> None, e.g. a metric
    on_accepted: Callable[[], None] | None = None
    live: int = 0
    refused: int = 0
    timed_out: int = 0
    _last_log: float = field(default=0.0, repr=False)

    def factory(self, inner_factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            if self.live >= self.max_connections:
                return _Refuse(self)
            return _Guarded(inner_factory(), self)

        return make

    def count_refused(self, reason: str) -> None:
        if reason == "cap":
            self.refused += 1
        else:
            self.timed_out += 1
        if self.on_refused is not None:
            self.on_refused(reason)
        now = time.monotonic()
        if now - self._last_log >= 10.0:
            self._last_log = now
            log.warning(
                "%s listener: closing connections (%d over the cap of %d so far, %d slow to send a request head)",
                self.listener,
                self.refused,
                self.max_connections,
                self.timed_out,
            )


class _Refuse(asyncio.Protocol):
    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard.count_refused("cap")
        transport.abort()  # type: ignore[attr-defined]


class _Guarded(asyncio.Protocol):
    """Counts a connection against its listener's cap and times out a slow request head; everything else
    goes to the real protocol (aiohttp's request handler)."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard.live += 1
        if self.guard.on_accepted is not None:
            self.guard.on_accepted()
        self.transport = transport  # type: ignore[assignment]
        if self.guard.header_timeout_s > 0:
            self.timer = asyncio.get_running_loop().call_later(self.guard.header_timeout_s, self._too_slow)
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.timer = None
        self.guard.count_refused("header_timeout")
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if HEAD_END in seen:
                self.timer.cancel()
                self.timer = None
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.live -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """An aiohttp site on a host and port, or on a listening socket made elsewhere (`sock`), whose
    connections go through a ConnectionGuard."""

    __slots__ = ("_host", "_port", "_sock", "_guard", "_reuse_address")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: Any = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._sock, self._guard = host, port, sock, guard

    @property
    def name(self) -> str:
        if self._sock is not None:
            return f"sock:{self._sock.getsockname()}"
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory = self._guard.factory(server)
        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                factory, self._host, self._port, backlog=self._backlog, reuse_address=True
            )


def raise_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard) after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 1 << 16)
    else:
        target = hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


class RateLimitedAcceptErrors:
    """A loop exception handler that lets asyncio's accept-failure message through at most once per
    `interval_s` (with the count of those suppressed) and hands everything else to the previous handler."""

    def __init__(self, previous: Any, interval_s: float = 10.0) -> None:
        self.previous = previous
        self.interval_s = interval_s
        self.suppressed = 0
        self._last = -1e18

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "socket.accept() out of system resource" in message or "Error on accepting" in message:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                self.suppressed += 1
                return
            self._last = now
            if self.suppressed:
                context = {**context, "message": f"{message} ({self.suppressed} more since the last report)"}
                self.suppressed = 0
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def install_accept_error_limiter(loop: asyncio.AbstractEventLoop) -> None:
    handler = loop.get_exception_handler()
    if not isinstance(handler, RateLimitedAcceptErrors):
        loop.set_exception_handler(RateLimitedAcceptErrors(handler))
