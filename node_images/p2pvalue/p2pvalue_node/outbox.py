"""The durable federation outbox: a sender task per peer that has entries waiting (none for a peer
with nothing to send, so trusting many peers costs nothing while idle), exponential backoff with
jitter.

Entries are written in the same transaction as the local update they carry, so an acknowledged
update is always either delivered or still waiting here after a crash. A batch is deleted only
after the peer answered; the peer applies idempotently, so a batch resent after a crash is harmless.
The sender does not wait for that delete to commit (one fsync less per push under a busy disk): until
it has, the delivered entries are left out of the next reads.

An item the peer answers with "retry" (it does not know the object yet: the announcement by the object's
home is still on its way, e.g. just after a partition heals) stays here and is sent again after a
backoff, while the peer's other entries go on; after DEFER_ATTEMPTS tries it is dropped like any
rejected item, and anti-entropy repairs the object once the peer knows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from .federation import PUSH_PATH, Federation, FederationError, Peer, wait_event
from .storage import StorageClosed

log = logging.getLogger("p2pvalue.outbox")

BATCH = 256
DEFER_ATTEMPTS = 8


@dataclass
class Deferral:
    attempts: int
    due: float  # event-loop time of the next try


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
        # peer domain -> object id -> when to offer it again; only while the peer has deferred items
        self.deferred: dict[str, dict[str, Deferral]] = {}
        self.deleting: set[int] = set()  # delivered entries whose DELETE has not committed yet
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
        """Send until the peer's outbox is empty (no deferred item left either) and nothing new came in
        meanwhile, then end (the next notify starts a new sender); between that check and the end there
        is no await, so a notify cannot be missed."""
        try:
            await self._drain(peer)
        finally:
            if self.tasks.get(peer.domain) is asyncio.current_task():
                del self.tasks[peer.domain]

    async def _drain(self, peer: Peer) -> None:
        while peer.wake.is_set() or peer.domain in self.deferred:
            if not peer.wake.is_set():
                await self._until_due(peer)
            peer.wake.clear()
            while True:
                rows = self._next_rows(peer)
                if not rows:
                    self._forget_due(peer)  # a due item with no entry left: nothing to try again
                    break
                try:
                    await self._send(peer, rows)
                except FederationError as exc:
                    if exc.status == 413 and len(rows) > 1:
                        peer.batch = max(1, len(rows) // 2)  # the peer's body limit: send less at once
                        continue
                    if exc.permanent:
                        log.warning("dropping %d outbox entries for %s: %s", len(rows), peer.domain, exc)
                        self._delete([r[0] for r in rows])
                        continue
                    peer.failures += 1
                    self.fed.contact(peer.domain, False)
                    delay = self.backoff_s(peer.failures)
                    log.info("push to %s failed (%s); retry in %.2fs", peer.domain, exc, delay)
                    # a sign of life from the peer (contact()) sets wake and ends the wait early
                    await wait_event(peer.wake, delay)
                    peer.wake.clear()
                    continue
                peer.failures = 0
                peer.batch = min(BATCH, peer.batch * 2)

    def _next_rows(self, peer: Peer) -> list[tuple[Any, ...]]:
        """The oldest entries for the peer, leaving out objects whose deferral is not due yet."""
        now = asyncio.get_running_loop().time()
        waiting = [oid for oid, d in self.deferred.get(peer.domain, {}).items() if d.due > now]
        skip = f" AND object_id NOT IN ({','.join('?' * len(waiting))})" if waiting else ""
        rows = self.node.storage.read(
            f"SELECT id, object_id, payload FROM outbox WHERE peer = ?{skip} ORDER BY id LIMIT ?",
            (peer.domain, *waiting, peer.batch + len(self.deleting)),
        )
        return [r for r in rows if r[0] not in self.deleting][: peer.batch]

    async def _until_due(self, peer: Peer) -> None:
        """Wait until the first deferred item is due, or new work comes in."""
        due = min(d.due for d in self.deferred[peer.domain].values())
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await wait_event(peer.wake, delay)

    def _forget_due(self, peer: Peer) -> None:
        mine = self.deferred.get(peer.domain)
        if mine is None:
            return
        now = asyncio.get_running_loop().time()
        for oid in [oid for oid, d in mine.items() if d.due <= now]:
            del mine[oid]
        if not mine:
            del self.deferred[peer.domain]

    def _settle(self, peer: Peer, sent: set[str], retry: set[str]) -> set[str]:
        """Record the outcome of a push for deferrals; return the objects whose entries stay to be tried
        again (the others are done: delivered, or rejected for good)."""
        mine = self.deferred.setdefault(peer.domain, {})
        keep: set[str] = set()
        for oid in sent:
            d = mine.pop(oid, None)
            if oid not in retry:
                continue
            attempts = (d.attempts if d else 0) + 1
            if attempts > DEFER_ATTEMPTS:
                log.warning(
                    "dropping object %s for %s: still not known there after %d tries", oid, peer.domain, attempts - 1
                )
                continue
            delay = self.backoff_s(attempts)
            mine[oid] = Deferral(attempts, asyncio.get_running_loop().time() + delay)
            log.info("%s does not know object %s yet; offering it again in %.2fs", peer.domain, oid, delay)
            keep.add(oid)
        if not mine:
            del self.deferred[peer.domain]
        return keep

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
        retry: set[str] = set()
        for r in resp.get("results", []):
            if not isinstance(r, dict) or r.get("ok") is not False:
                continue
            if r.get("retry") is True and r.get("object_id") in index:
                retry.add(r["object_id"])
            else:
                log.warning("%s rejected object %s: %s", peer.domain, r.get("object_id"), r.get("error"))
        keep = self._settle(peer, set(index), retry)
        self._delete([r[0] for r in rows if r[1] not in keep])

    def _delete(self, ids: list[int]) -> None:
        """Forget delivered entries, without waiting for the commit. Should it fail (or the node stop
        first), they are sent again later, which the peer applies idempotently."""
        if not ids:
            return
        try:
            fut = self.node.storage.submit(
                lambda conn: conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            )
        except StorageClosed:
            return
        self.deleting.update(ids)

        def done(f: asyncio.Future[Any]) -> None:
            self.deleting.difference_update(ids)
            if not f.cancelled() and f.exception() is not None:
                log.warning("%d delivered outbox entries stay to be sent again: %s", len(ids), f.exception())

        fut.add_done_callback(done)
