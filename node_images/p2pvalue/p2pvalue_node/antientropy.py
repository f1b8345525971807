"""Anti-entropy: peers exchange state vectors of the objects they share and send what is missing.

Rounds run only with peers this node shares objects with: a trusted peer that shares nothing costs
no task, no timer and no request while idle. With a sharing peer, the first round comes at a random
moment in the first min(interval, 5 s) after start (so nodes started together do not run in step),
then every `antientropy_interval_s` times a random factor in [0.75, 1.25]; a round also runs when
the peer comes back after a failure (see Federation.contact). A peer this node starts sharing with
gets its task then, and its first round one interval later (the push that began the sharing
carries the object). Objects are never deleted, so a peer's task, once started, stays.

The requester sends its state vectors; the responder answers with its own state vectors and the
updates the requester lacks (plus whole objects the requester did not list); the requester applies
those and pushes back what the responder lacks. Ledger credits are reconciled the same way: each
listed object carries the requester's credit summary; where the responder's differs, its answer
lists its credits of the object, and the requester counts those (see Node.accept_credits) and
pushes back the ones missing from that list.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from typing import Any

from . import ledger
from .documents import decode_state_vector, lacks
from .federation import PUSH_PATH, SYNC_PATH, Federation, FederationError, Peer, PushItem, WireUpdate, wait_event
from .node import Denied, Invalid

log = logging.getLogger("p2pvalue.antientropy")

START_SPREAD_S = 5.0  # the first round comes at a random moment within this (or the interval, if shorter)
JITTER = (0.75, 1.25)  # each later wait is the interval times a random factor in this range
CREDIT_WIRE_BYTES = 600  # a generous bound on one credit's JSON (author up to 320 characters)


class AntiEntropy:
    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.node = fed.node
        self.tasks: dict[str, asyncio.Task[None]] = {}  # peer domain -> its rounds, once shared with

    def start(self) -> None:
        self.node.on_shared = self.shared
        interval = self.node.config.federation.antientropy_interval_s
        node = self.node
        shared = {d for m in node.objects.values() if m.id not in node.quarantined for d in m.domains()}
        for domain in sorted(shared & self.fed.peers.keys()):
            # a round soon after start (catch up on whatever happened while down), at a random moment
            self._start(self.fed.peers[domain], random.uniform(0.0, min(interval, START_SPREAD_S)))

    def shared(self, domains: list[str]) -> None:
        """This node started sharing an object with these domains: a peer it shared nothing with
        gets its rounds, the first one interval later. No round now: the push that made the object
        shared carries it, and a round per new object and participant would be a storm in a large
        federation (an object with n participant nodes made n² rounds)."""
        interval = self.node.config.federation.antientropy_interval_s
        for d in domains:
            peer = self.fed.peers.get(d)
            if peer is not None and d not in self.tasks:
                self._start(peer, interval * random.uniform(*JITTER))

    def _start(self, peer: Peer, first_delay_s: float) -> None:
        self.tasks[peer.domain] = asyncio.create_task(self._run(peer, first_delay_s), name=f"antientropy:{peer.domain}")

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, peer: Peer, delay: float) -> None:
        interval = self.node.config.federation.antientropy_interval_s
        while True:
            await wait_event(peer.ae_trigger, delay)
            peer.ae_trigger.clear()
            delay = interval * random.uniform(*JITTER)
            if not self.node.shares_with(peer.domain):
                continue  # only quarantined objects are shared with it: nothing to reconcile
            try:
                await self.round(peer)
                self.node.metrics.antientropy_rounds.labels(result="ok").inc()
            except FederationError as exc:
                self.node.metrics.antientropy_rounds.labels(result="failed").inc()
                self.fed.contact(peer.domain, False)
                log.info("anti-entropy with %s failed: %s", peer.domain, exc)

    async def round(self, peer: Peer) -> int:
        """One exchange with `peer`, in pages that fit the peer's body limit; return the number of
        objects repaired on either side."""
        node = self.node
        shared = sorted(node.shared_with(peer.domain), key=lambda m: m.id)
        summaries = ledger.summaries(node.storage)
        budget = max(4096, node.config.limits.max_body_bytes // 2)
        pages: list[list[dict[str, Any]]] = [[]]
        size = 0
        for m in shared:
            entry = {
                "id": m.id,
                "sv": base64.b64encode(m.state_vector).decode(),
                "meta": m.to_wire(),
                "cs": summaries.get(m.id, ledger.EMPTY_SUMMARY),
            }
            n = len(json.dumps(entry)) + 1
            if pages[-1] and size + n > budget:
                pages.append([])
                size = 0
            pages[-1].append(entry)
            size += n
        repaired = 0
        for i, page in enumerate(pages):
            after = pages[i - 1][-1]["id"] if i > 0 else None
            upto = page[-1]["id"] if i < len(pages) - 1 else None
            request: dict[str, Any] = {"objects": page, "credits": True}
            if len(pages) > 1:
                request.update({"after": after, "upto": upto})
            repaired += await self._exchange(peer, request)
        return repaired

    async def _exchange(self, peer: Peer, request: dict[str, Any]) -> int:
        node = self.node
        resp = await self.fed.post(peer.domain, SYNC_PATH, request)
        self.fed.contact(peer.domain, True)
        repaired = 0
        push: list[dict[str, Any]] = []
        for entry in resp.get("objects", []):
            try:
                oid, their_sv = entry["id"], base64.b64decode(entry["sv"], validate=True)
                theirs = decode_state_vector(their_sv)
                their_credits = entry.get("credits")  # present when our credit summaries differ
                item = PushItem(object_id=oid, meta=entry.get("meta"), updates=[], credits=their_credits or [])
                if entry.get("update"):
                    item.updates.append(
                        WireUpdate(
                            update=entry["update"], origin_node=peer.domain, origin_ts_ms=0, author=None, repair=True
                        )
                    )
                repaired += await self.fed.receive_item(peer.domain, item)
                meta = node.objects[oid]
                if lacks(decode_state_vector(meta.state_vector), theirs):
                    diff = node.load_doc(oid).doc.get_update(their_sv)
                    push.append(
                        {
                            "object_id": oid,
                            "meta": meta.to_wire(),
                            "updates": [
                                {
                                    "update": base64.b64encode(diff).decode(),
                                    "origin_node": node.domain,
                                    "origin_ts_ms": 0,
                                    "author": None,
                                    "repair": True,
                                }
                            ],
                        }
                    )
                if isinstance(their_credits, list):
                    push.extend(self._missing_credits(oid, meta.to_wire(), their_credits))
            except (Denied, Invalid, ValueError, KeyError, TypeError) as exc:
                log.warning("anti-entropy with %s: skipping an entry: %s", peer.domain, exc)
        # pushed back in batches that fit the peer's body limit
        limit = max(4096, node.config.limits.max_body_bytes)
        batch: list[dict[str, Any]] = []
        size = 0
        for pushed in push:
            n = len(json.dumps(pushed))
            if batch and size + n > limit:
                await self.fed.post(peer.domain, PUSH_PATH, {"items": batch})
                batch, size = [], 0
            batch.append(pushed)
            size += n
        if batch:
            await self.fed.post(peer.domain, PUSH_PATH, {"items": batch})
        return repaired + len(push)

    def _missing_credits(self, oid: str, meta: dict[str, Any], theirs: list[Any]) -> list[dict[str, Any]]:
        """Push items with the credits of `oid` that the peer's list lacks, in chunks that fit a push."""
        have = {c.get("digest") for c in theirs if isinstance(c, dict)}
        missing = [c.to_wire() for c in self.node.signed_credits(oid) if c.digest.hex() not in have]
        per_item = max(1, self.node.config.limits.max_body_bytes // 2 // CREDIT_WIRE_BYTES)
        return [
            {"object_id": oid, "meta": meta, "updates": [], "credits": missing[i : i + per_item]}
            for i in range(0, len(missing), per_item)
        ]
