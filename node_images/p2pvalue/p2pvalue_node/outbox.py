"""The durable federation outbox: a sender task per peer that has entries waiting (none for a peer
with nothing to send, so trusting many peers costs nothing while idle), exponential backoff with
jitter.

Entries are written in the same transaction as the local update they carry, so an acknowledged
update is always either delivered or still waiting here after a crash. A batch is deleted only
after the peer answered; the peer applies idempotently, so a batch resent after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from .federation import PUSH_PATH, Federation, FederationError, Peer

log = logging.getLogger("p2pvalue.outbox")

BATCH = 256


def backoff_delay(failures: int, initial_s: float, max_s: float, rand: float) -> float:
    """Delay before retry number `failures` (1, 2, ...): initial * 2^(failures-1), capped at max, times a
    jitter factor in [0.5, 1) drawn from `rand` in [0, 1), so that senders recovering together spread out."""
    base = min(max_s, initial_s * (2 ** min(max(failures, 1) - 1, 30)))
    return base * (0.5 + rand / 2)


class Outbox:
    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.node = fed.node
        self.tasks: dict[str, asyncio.Task[None]] = {}  # peer domain -> its sender, while it has work
        self.node.on_outbox = self.notify

    def start(self) -> None:
        # entries left from before a restart
        self.notify([d for (d,) in self.node.storage.read("SELECT DISTINCT peer FROM outbox", ())])

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def notify(self, domains: list[str]) -> None:
        for d in domains:
            peer = self.fed.peers.get(d)
            if peer is None:
                continue
            peer.wake.set()
            if d not in self.tasks:
                self.tasks[d] = asyncio.create_task(self._run(peer), name=f"outbox:{d}")

    def backoff_s(self, failures: int) -> float:
        cfg = self.node.config.federation
        return backoff_delay(failures, cfg.backoff_initial_s, cfg.backoff_max_s, random.random())

    async def _run(self, peer: Peer) -> None:
        """Send until the peer's outbox is empty and nothing new came in meanwhile, then end (the
        next notify starts a new sender); between that check and the end there is no await, so a
        notify cannot be missed."""
        try:
            await self._drain(peer)
        finally:
            if self.tasks.get(peer.domain) is asyncio.current_task():
                del self.tasks[peer.domain]

    async def _drain(self, peer: Peer) -> None:
        while peer.wake.is_set():
            peer.wake.clear()
            while True:
                rows = self.node.storage.read(
                    "SELECT id, object_id, payload FROM outbox WHERE peer = ? ORDER BY id LIMIT ?",
                    (peer.domain, peer.batch),
                )
                if not rows:
                    break
                try:
                    await self._send(peer, rows)
                except FederationError as exc:
                    if exc.status == 413 and len(rows) > 1:
                        peer.batch = max(1, len(rows) // 2)  # the peer's body limit: send less at once
                        continue
                    if exc.permanent:
                        log.warning("dropping %d outbox entries for %s: %s", len(rows), peer.domain, exc)
                        await self._delete([r[0] for r in rows])
                        continue
                    peer.failures += 1
                    self.fed.contact(peer.domain, False)
                    delay = self.backoff_s(peer.failures)
                    log.info("push to %s failed (%s); retry in %.2fs", peer.domain, exc, delay)
                    try:
                        # a sign of life from the peer (contact()) sets wake and ends the wait early
                        await asyncio.wait_for(peer.wake.wait(), timeout=delay)
                    except TimeoutError:
                        pass
                    peer.wake.clear()
                    continue
                peer.failures = 0
                peer.batch = min(BATCH, peer.batch * 2)

    async def _send(self, peer: Peer, rows: list[tuple[Any, ...]]) -> None:
        items: list[dict[str, Any]] = []
        index: dict[str, dict[str, Any]] = {}
        for _id, oid, payload_text in rows:
            meta = self.node.objects.get(oid)
            if meta is None:
                continue
            item = index.get(oid)
            if item is None:
                item = {"object_id": oid, "meta": meta.to_wire(), "updates": [], "credits": []}
                index[oid] = item
                items.append(item)
            payload = json.loads(payload_text)
            if payload["kind"] == "update":
                item["updates"].append(
                    {
                        "update": payload["update"],
                        "origin_node": payload["origin_node"],
                        "origin_ts_ms": payload["origin_ts_ms"],
                        "author": payload.get("author"),
                        "repair": bool(payload.get("repair", False)),
                    }
                )
                item["credits"].extend(payload.get("credits", []))
        metrics = self.node.metrics
        metrics.federation_sends.inc()
        try:
            resp = await self.fed.post(peer.domain, PUSH_PATH, {"items": items})
        except FederationError:
            metrics.federation_send_failures.inc()
            raise
        self.fed.contact(peer.domain, True)
        for r in resp.get("results", []):
            if isinstance(r, dict) and not r.get("ok"):
                log.warning("%s rejected object %s: %s", peer.domain, r.get("object_id"), r.get("error"))
        await self._delete([r[0] for r in rows])

    async def _delete(self, ids: list[int]) -> None:
        await self.node.storage.write(
            lambda conn: conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        )
