"""The contribution ledger: P2Pvalue's value accounting per contributor and object.

An edit is one accepted update (a Yjs update or one JSON-ops request) by a contributor; bytes are the
size of its encoded Yjs update. The node that accepts an edit from its own user (its home node) decides
that it counts, and signs a credit for it: (object, SHA-256 of the update, author, bytes, time). Credits
travel with the edit's push and, for edits that reach a node only through anti-entropy, in the
anti-entropy exchange itself. A node counts a credit when the author's home node signed it (its own
key, or a trusted peer's), once per (object, digest): `ledger_seen` remembers what was counted (it
outlives compaction and restarts). So every node that holds an object counts each accepted edit
exactly once, whichever way the edit arrived, and no node can credit another node's users.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .keys import SigningKey
from .storage import Storage

MAX_EDIT_BYTES = 1 << 30


@dataclass(frozen=True)
class Credit:
    """One counted edit, signed by the author's home node."""

    object_id: str
    digest: bytes  # SHA-256 of the edit's Yjs update
    author: str
    nbytes: int
    at_ms: int
    sig: bytes

    @staticmethod
    def message(object_id: str, digest: bytes, author: str, nbytes: int, at_ms: int) -> bytes:
        return "\n".join(["P2PCREDIT1", object_id, digest.hex(), author, str(nbytes), str(at_ms)]).encode()

    @classmethod
    def signed(cls, key: SigningKey, object_id: str, digest: bytes, author: str, nbytes: int, at_ms: int) -> Credit:
        return cls(
            object_id, digest, author, nbytes, at_ms, key.sign(cls.message(object_id, digest, author, nbytes, at_ms))
        )

    def signed_with(self, key: SigningKey) -> Credit:
        """This credit with its home node's signature (a node signs its own credits when they first
        leave it: an object nobody else holds never pays for signatures; see Node.signed_credits)."""
        message = Credit.message(self.object_id, self.digest, self.author, self.nbytes, self.at_ms)
        return Credit(self.object_id, self.digest, self.author, self.nbytes, self.at_ms, key.sign(message))

    def verify(self, key: VerifyKey) -> bool:
        try:
            key.verify(Credit.message(self.object_id, self.digest, self.author, self.nbytes, self.at_ms), self.sig)
        except (BadSignatureError, ValueError):
            return False
        return True

    def to_wire(self) -> dict[str, Any]:
        return {
            "digest": self.digest.hex(),
            "author": self.author,
            "bytes": self.nbytes,
            "at_ms": self.at_ms,
            "sig": base64.b64encode(self.sig).decode(),
        }

    @classmethod
    def from_wire(cls, object_id: str, data: Any) -> Credit:
        """Parse a credit received for `object_id`; ValueError if it is malformed (not yet verified)."""
        if not isinstance(data, dict):
            raise ValueError("a credit must be a JSON object")
        digest, author, nbytes, at_ms, sig = (data.get(k) for k in ("digest", "author", "bytes", "at_ms", "sig"))
        if not (isinstance(digest, str) and len(digest) == 64 and isinstance(author, str) and len(author) <= 320):
            raise ValueError("a credit needs a SHA-256 digest (hex) and an author")
        for n in (nbytes, at_ms):
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 62:
                raise ValueError("a credit's bytes and at_ms must be non-negative integers")
        if not (isinstance(sig, str) and len(sig) <= 128) or not 0 < nbytes <= MAX_EDIT_BYTES:  # type: ignore[operator]
            raise ValueError("a credit needs a signature and a plausible size")
        try:
            return cls(object_id, bytes.fromhex(digest), author, nbytes, at_ms, base64.b64decode(sig, validate=True))  # type: ignore[arg-type]
        except (ValueError, binascii.Error):
            raise ValueError("a credit's digest or signature is not encoded right") from None


def summary_of(n: int, x: int) -> str:
    return f"{n}:{x:x}"


EMPTY_SUMMARY = summary_of(0, 0)


def _fold(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: fits an SQLite INTEGER


def count_credit(conn: sqlite3.Connection, credit: Credit, at_ms: int) -> bool:
    """Count `credit` unless it was counted before; runs inside a write transaction. Returns True if counted.

    The credit is kept (with its signature) so that it can be handed to peers that lack it, and the
    object's credit summary (count, XOR of folded digests) is updated for the anti-entropy comparison."""
    if (
        conn.execute(
            "INSERT OR IGNORE INTO ledger_seen (object_id, digest) VALUES (?, ?)", (credit.object_id, credit.digest)
        ).rowcount
        != 1
    ):
        return False
    record(conn, credit.author, credit.object_id, credit.nbytes, at_ms)
    conn.execute(
        "INSERT OR IGNORE INTO ledger_credits (object_id, digest, author, bytes, at_ms, sig) VALUES (?, ?, ?, ?, ?, ?)",
        (credit.object_id, credit.digest, credit.author, credit.nbytes, credit.at_ms, credit.sig),
    )
    # one statement: SQLite has no XOR operator, and for integers x ^ y == (x | y) - (x & y)
    conn.execute(
        "INSERT INTO ledger_summaries (object_id, n, x) VALUES (?, 1, ?) ON CONFLICT (object_id) DO UPDATE "
        "SET n = n + 1, x = (x | excluded.x) - (x & excluded.x)",
        (credit.object_id, _fold(credit.digest)),
    )
    return True


def summaries(storage: Storage) -> dict[str, str]:
    """Each object's credit summary: equal summaries mean (with overwhelming odds) equal credit sets."""
    return {oid: summary_of(n, x) for oid, n, x in storage.read("SELECT object_id, n, x FROM ledger_summaries")}


def credits_of(storage: Storage, object_id: str) -> list[Credit]:
    """The object's counted credits; this node's own may not be signed yet (sig b"", see Credit.signed_with)."""
    rows = storage.read(
        "SELECT digest, author, bytes, at_ms, sig FROM ledger_credits WHERE object_id = ? ORDER BY digest", (object_id,)
    )
    return [Credit(object_id, d, a, n, t, s) for d, a, n, t, s in rows]


@dataclass
class Contribution:
    contributor: str
    object_id: str
    edits: int
    bytes: int
    first_ms: int
    last_ms: int


def record(conn: sqlite3.Connection, contributor: str, object_id: str, nbytes: int, at_ms: int) -> None:
    """Runs inside the write transaction of the update it counts."""
    conn.execute(
        "INSERT INTO ledger (contributor, object_id, edits, bytes, first_ms, last_ms) VALUES (?, ?, 1, ?, ?, ?) "
        "ON CONFLICT (contributor, object_id) DO UPDATE SET edits = edits + 1, bytes = bytes + excluded.bytes, "
        "first_ms = MIN(first_ms, excluded.first_ms), last_ms = MAX(last_ms, excluded.last_ms)",
        (contributor, object_id, nbytes, at_ms, at_ms),
    )


def query(
    storage: Storage, contributor: str | None = None, object_id: str | None = None, object_ids: set[str] | None = None
) -> list[Contribution]:
    sql = "SELECT contributor, object_id, edits, bytes, first_ms, last_ms FROM ledger"
    where: list[str] = []
    params: list[Any] = []
    if contributor:
        where.append("contributor = ?")
        params.append(contributor)
    if object_id:
        where.append("object_id = ?")
        params.append(object_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY contributor, object_id"
    rows = [Contribution(*r) for r in storage.read(sql, tuple(params))]
    if object_ids is not None:
        rows = [r for r in rows if r.object_id in object_ids]
    return rows


def totals(rows: list[Contribution]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = per.setdefault(
            r.contributor,
            {
                "contributor": r.contributor,
                "edits": 0,
                "bytes": 0,
                "objects": 0,
                "first_ms": r.first_ms,
                "last_ms": r.last_ms,
            },
        )
        t["edits"] += r.edits
        t["bytes"] += r.bytes
        t["objects"] += 1
        t["first_ms"] = min(t["first_ms"], r.first_ms)
        t["last_ms"] = max(t["last_ms"], r.last_ms)
    return {
        "contributors": len(per),
        "edits": sum(r.edits for r in rows),
        "bytes": sum(r.bytes for r in rows),
        "objects": len({r.object_id for r in rows}),
        "per_contributor": sorted(per.values(), key=lambda t: t["contributor"]),
    }
