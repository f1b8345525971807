"""Issue 10, medium 12: federation works past the peer's body limit: a large accepted update reaches
the peer, and anti-entropy over more objects than one request can carry converges (real nodes)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pycrdt
from p2pvalue_node.testing import wait_until


def test_an_accepted_large_update_reaches_the_peer(nodes_factory: Any) -> None:
    # anti-entropy (which reads answers without the body limit) must not be what carries it over
    n0, n1 = nodes_factory(2, federation={"antientropy_interval_s": 300.0})
    n0.add_user("alice")
    n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
    doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["big"] = "b" * 900_000  # under the 1 MiB body limit; 1.2 MB as base64
    r = n0.req(
        "POST",
        f"/api/objects/{oid}/update",
        user="alice",
        raw=doc.get_update(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 200, r.body
    assert wait_until(
        lambda: (
            n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200
            and len(n1.req("GET", f"/api/objects/{oid}", user="bob").json()["data"].get("big", "")) == 900_000
        ),
        timeout=40,
    )


def test_anti_entropy_pages_past_the_body_limit(nodes_factory: Any) -> None:
    """200 shared objects do not fit one sync request under a 16 KiB body limit; with the outbox lost,
    only paged anti-entropy brings them over."""
    n0, n1 = nodes_factory(2, limits={"max_body_bytes": 16384})
    n0.add_user("alice")
    n1.add_user("bob")
    ids = []
    for i in range(200):
        r = n0.req("POST", "/api/objects", {"id": f"obj-{i:03d}", "participants": [f"bob@{n1.domain}"]}, user="alice")
        assert r.status == 201
        ids.append(r.json()["id"])
    # both hold all 200 (so each side's request lists 200 objects: more than one request can carry)
    assert wait_until(lambda: len(n1.req("GET", "/api/objects", user="bob").json()["objects"]) == 200, timeout=120)
    n1.stop()
    n0.req("POST", f"/api/objects/{ids[150]}/ops", {"ops": [{"op": "set", "key": "x", "value": 150}]}, user="alice")
    n0.stop()
    db = sqlite3.connect(n0.dir / "data" / "node.sqlite3")
    db.execute("DELETE FROM outbox")  # lost: only anti-entropy can repair
    db.commit()
    db.close()
    n1.start()
    n0.start()
    assert wait_until(
        lambda: n1.req("GET", f"/api/objects/{ids[150]}", user="bob").json()["data"] == {"x": 150},
        timeout=60,
        interval=1.0,
    )
