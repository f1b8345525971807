"""Observers: one account per node, a participant of every object that node holds, subscribed
over the node's WebSocket. They record when each update (found by its unique id in the raw Yjs
update) first becomes visible on each node, which is propagation as users there see it.

Each update's id is an ASCII mark (`workload.plan.UID_PATTERN`) written as a map key, a list item
or a run of text; Yjs keeps such strings whole in its binary updates (merged updates concatenate
runs, never split them, because the workload only inserts text at index 0), so a byte search finds
them without decoding documents.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .endpoints import Endpoint
from .workload.plan import UID_PATTERN

OBSERVER = "cnlab-observer"
_UID = re.compile(UID_PATTERN)
SUBS_PER_CONNECTION = 60  # the node's default limit is 64 per connection
# A ping every HEARTBEAT_S finds a connection to a device that vanished (reboot); a pong may take
# HEARTBEAT_S / 2. Short heartbeats cut connections to nodes that are only slow (a busy dense host),
# and every reconnection re-subscribes, which sends whole documents again.
HEARTBEAT_S = 30.0


def uids_in(raw: bytes) -> list[str]:
    return [m.decode() for m in _UID.findall(raw)]


@dataclass
class Visibility:
    """First time (seconds since the workload start) each uid was seen on each node.

    A uid first seen in a live update was seen when it arrived (`live`); one first seen in the
    state sent with a subscription was there at some earlier moment (an object subscribed to
    before it reached the node is asked for again every second): that time is only an upper bound,
    good for convergence, not a propagation sample."""

    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    live: set[tuple[str, str]] = field(default_factory=set)
    disconnects: dict[str, int] = field(default_factory=dict)
    subscribed: dict[tuple[str, str], float] = field(default_factory=dict)  # (node, object) -> t

    def saw(self, node: str, raw: bytes, t: float, live: bool) -> None:
        for uid in uids_in(raw):
            key = (uid, node)
            if key not in self.first_seen:
                self.first_seen[key] = t
                if live:
                    self.live.add(key)


class _Connection:
    def __init__(self, owner: NodeObserver):
        self.owner = owner
        self.objects: set[str] = set()
        self.pending: set[str] = set()  # not subscribed yet (unknown on the node so far, or not sent)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task = asyncio.create_task(self._run())

    async def subscribe(self, oid: str) -> None:
        self.objects.add(oid)
        self.pending.add(oid)
        if self.ws is not None and not self.ws.closed:
            await self._send(oid)

    async def _send(self, oid: str) -> None:
        assert self.ws is not None
        try:
            await self.ws.send_str(json.dumps({"type": "subscribe", "object": oid, "id": oid}))
        except (ConnectionError, RuntimeError):
            pass  # the reader notices the closed socket and reconnects

    async def _retry_pending(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.ws is None or self.ws.closed:
                return
            for oid in sorted(self.pending):
                await self._send(oid)

    async def _run(self) -> None:
        o = self.owner
        backoff = 0.2
        while True:
            retry: asyncio.Task[None] | None = None
            try:
                async with o.session.ws_connect(
                    f"{o.endpoint.url}/api/ws", params={"token": o.token}, heartbeat=HEARTBEAT_S, max_msg_size=0
                ) as ws:
                    self.ws = ws
                    backoff = 0.2
                    self.pending = set(self.objects)
                    for oid in sorted(self.pending):
                        await self._send(oid)
                    retry = asyncio.create_task(self._retry_pending())
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        self._handle(json.loads(msg.data))
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                pass
            finally:
                if retry is not None:
                    retry.cancel()
                self.ws = None
            o.visibility.disconnects[o.endpoint.device] = o.visibility.disconnects.get(o.endpoint.device, 0) + 1
            await asyncio.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    def _handle(self, msg: dict[str, Any]) -> None:
        o, t = self.owner, self.owner.clock()
        kind = msg.get("type")
        if kind == "subscribed":
            oid = str(msg.get("object"))
            self.pending.discard(oid)
            o.visibility.subscribed.setdefault((o.endpoint.device, oid), t)
            o.visibility.saw(o.endpoint.device, base64.b64decode(msg.get("state", "")), t, live=False)
        elif kind == "update":
            o.visibility.saw(o.endpoint.device, base64.b64decode(msg.get("update", "")), t, live=True)

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


class NodeObserver:
    def __init__(
        self,
        endpoint: Endpoint,
        token: str,
        session: aiohttp.ClientSession,
        visibility: Visibility,
        clock: Callable[[], float],
    ):
        self.endpoint, self.token, self.session = endpoint, token, session
        self.visibility, self.clock = visibility, clock
        self.connections: list[_Connection] = []
        self.objects: set[str] = set()

    async def watch(self, oid: str) -> None:
        if oid in self.objects:
            return
        self.objects.add(oid)
        conn = next((c for c in self.connections if len(c.objects) < SUBS_PER_CONNECTION), None)
        if conn is None:
            conn = _Connection(self)
            self.connections.append(conn)
        await conn.subscribe(oid)

    def pending(self) -> set[str]:
        return {oid for c in self.connections for oid in c.pending}

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections))


class Observers:
    """Every node's observer; `watch(object, nodes)` subscribes the observers of those nodes."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        tokens: dict[str, str],
        session: aiohttp.ClientSession,
        clock: Callable[[], float],
    ):
        self.visibility = Visibility()
        self.nodes = {d: NodeObserver(ep, tokens[d], session, self.visibility, clock) for d, ep in endpoints.items()}
        self.watching = True

    async def watch(self, oid: str, nodes: set[str] | list[str]) -> None:
        if not self.watching:
            return
        for n in sorted(nodes):
            await self.nodes[n].watch(oid)

    def pending(self) -> dict[str, set[str]]:
        return {n: p for n, obs in self.nodes.items() if (p := obs.pending())}

    async def close(self) -> None:
        """Unsubscribe everything; later `watch` calls do nothing (a run that does not observe
        closes its observers once set-up has settled)."""
        self.watching = False
        await asyncio.gather(*(o.close() for o in self.nodes.values()))
