"""The contribution ledger: P2Pvalue's value accounting per contributor and object.

An edit is one accepted update (a Yjs update or one JSON-ops request) by a contributor; bytes are the
size of its encoded Yjs update. Remote contributions are counted when their update arrives through a
federation push; state repaired by anti-entropy carries no author and is not counted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from .storage import Storage


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
