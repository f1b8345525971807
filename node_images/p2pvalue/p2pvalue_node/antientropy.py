"""Anti-entropy: peers exchange state vectors of the objects they share and send what is missing.

A round with a peer runs when the node starts, when the peer comes back after a failure (see
Federation.contact) and every `antientropy_interval_s`. The requester sends its state vectors; the
responder answers with its own state vectors and the updates the requester lacks (plus whole objects
the requester did not list); the requester applies those and pushes back what the responder lacks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from .documents import decode_state_vector, lacks
from .federation import PUSH_PATH, SYNC_PATH, Federation, FederationError, Peer, PushItem, WireUpdate
from .node import Denied, Invalid

log = logging.getLogger("p2pvalue.antientropy")


class AntiEntropy:
    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.node = fed.node
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for peer in self.fed.peers.values():
            peer.ae_trigger.set()  # a round at start: catch up on whatever happened while down
            self.tasks.append(asyncio.create_task(self._run(peer), name=f"antientropy:{peer.domain}"))

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _run(self, peer: Peer) -> None:
        interval = self.node.config.federation.antientropy_interval_s
        while True:
            try:
                await asyncio.wait_for(peer.ae_trigger.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            peer.ae_trigger.clear()
            try:
                await self.round(peer)
                self.node.metrics.antientropy_rounds.labels(result="ok").inc()
            except FederationError as exc:
                self.node.metrics.antientropy_rounds.labels(result="failed").inc()
                self.fed.contact(peer.domain, False)
                log.info("anti-entropy with %s failed: %s", peer.domain, exc)

    async def round(self, peer: Peer) -> int:
        """One exchange with `peer`; return the number of objects repaired on either side."""
        node = self.node
        shared = node.shared_with(peer.domain)
        request = {"objects": [{"id": m.id, "sv": base64.b64encode(m.state_vector).decode(), "meta": m.to_wire()}
                               for m in shared]}
        resp = await self.fed.post(peer.domain, SYNC_PATH, request)
        self.fed.contact(peer.domain, True)
        repaired = 0
        push: list[dict[str, Any]] = []
        for entry in resp.get("objects", []):
            try:
                oid, their_sv = entry["id"], base64.b64decode(entry["sv"], validate=True)
                theirs = decode_state_vector(their_sv)
                item = PushItem(object_id=oid, meta=entry.get("meta"), updates=[])
                if entry.get("update"):
                    item.updates.append(WireUpdate(update=entry["update"], origin_node=peer.domain,
                                                   origin_ts_ms=0, author=None, repair=True))
                repaired += await self.fed.receive_item(peer.domain, item)
                meta = node.objects[oid]
                if lacks(decode_state_vector(meta.state_vector), theirs):
                    diff = node.load_doc(oid).doc.get_update(their_sv)
                    push.append({"object_id": oid, "meta": meta.to_wire(), "updates": [
                        {"update": base64.b64encode(diff).decode(), "origin_node": node.domain,
                         "origin_ts_ms": 0, "author": None, "repair": True}]})
            except (Denied, Invalid, ValueError, KeyError, TypeError) as exc:
                log.warning("anti-entropy with %s: skipping an entry: %s", peer.domain, exc)
        if push:
            await self.fed.post(peer.domain, PUSH_PATH, {"items": push})
            repaired += len(push)
        return repaired
