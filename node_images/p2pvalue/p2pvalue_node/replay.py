"""The replay store of signed federation requests, in SQLite: refused replays survive a restart.

A verified request's (origin, nonce) is remembered as a 64-bit digest until its timestamp leaves the
clock-skew window (bounded by time, not by count). The row is written through the node's group
commit, queued before anything the request itself writes, so whatever a request changed is never
durable without its nonce; a request still waiting for that commit is held in memory (`pending`), so
memory holds only the nonces of the last commit batch. Expired rows are deleted at most once a minute.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from .signing import SignatureRejected
from .storage import Storage, StorageClosed

log = logging.getLogger("p2pvalue.replay")

PRUNE_EVERY_S = 60.0


class PersistentNonces:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.pending: dict[int, float] = {}  # digest -> expiry (s), until its row is committed
        self._pruned_at = 0.0

    def claim(self, ident: int, expires_s: float, now: float) -> None:
        """Remember a nonce, or raise SignatureRejected if it is a replay."""
        key = ident - (1 << 63)  # an SQLite INTEGER is signed
        if ident in self.pending or self.storage.read(
            "SELECT 1 FROM nonces WHERE ident = ? AND expires_ms > ?", (key, int(now * 1000))
        ):
            raise SignatureRejected("replayed request")
        prune = now - self._pruned_at >= PRUNE_EVERY_S
        if prune:
            self._pruned_at = now
        expires_ms, now_ms = int(expires_s * 1000), int(now * 1000)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO nonces (ident, expires_ms) VALUES (?, ?)", (key, expires_ms))
            if prune:
                conn.execute("DELETE FROM nonces WHERE expires_ms <= ?", (now_ms,))

        try:
            fut = self.storage.submit(job)
        except StorageClosed:
            raise SignatureRejected("the node is stopping; try again later", 503) from None
        self.pending[ident] = expires_s

        def done(f: Any) -> None:
            self.pending.pop(ident, None)
            if not f.cancelled() and f.exception() is not None:
                log.error("a request's nonce could not be stored: %s", f.exception())

        fut.add_done_callback(done)
