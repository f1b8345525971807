"""Issue 10 item 11: every node that holds an object counts each accepted edit exactly once, also when
edits reach it only through anti-entropy (their pushes lost during a partition), and also when they
are relayed by a third node (the credits are signed by the author's home node, not by the relay).

Three real node processes; the partition is made by pointing the nodes' peer addresses at a port where
nothing listens (and restarting them), so each side keeps accepting edits while federation between
the sides fails; every outbox entry is then thrown away, so only anti-entropy can carry edits across.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import yaml
from p2pvalue_node.testing import ADMIN, LocalNode, free_port, request, wait_until


def _point_peers(node: LocalNode, addresses: dict[str, str]) -> None:
    """Rewrite `node`'s configured peer addresses (domain -> address) and restart it."""
    node.stop()
    cfg = yaml.safe_load(node.config_path.read_text())
    for peer in cfg["trusted_peers"]:
        peer["address"] = addresses.get(peer["domain"], peer["address"])
    node.config_path.write_text(yaml.safe_dump(cfg))
    node.start()


def _drop_outbox(node: LocalNode) -> None:
    with sqlite3.connect(node.dir / "data" / "node.sqlite3", timeout=30) as db:
        db.execute("DELETE FROM outbox")


def _edit(node: LocalNode, user: str, oid: str, key: str) -> None:
    r = node.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": key, "value": key}]}, user=user)
    assert r.status == 200, r.body


def _ledger(node: LocalNode, oid: str) -> dict[str, tuple[int, int]]:
    rows = request(node.client_port, "GET", f"/api/contributions?object={oid}", token=ADMIN).json()["contributions"]
    return {r["contributor"]: (r["edits"], r["bytes"]) for r in rows}


def _view(node: LocalNode, user: str, oid: str) -> Any:
    return node.req("GET", f"/api/objects/{oid}", user=user).json()["data"]


def test_ledgers_are_equal_on_every_node_after_a_partition_heals(nodes_factory: Any) -> None:
    n0, n1, n2 = nodes_factory(3)
    alice, bob, carol = n0.add_user("alice"), n1.add_user("bob"), n2.add_user("carol")
    users = {n0.domain: "alice", n1.domain: "bob", n2.domain: "carol"}
    oid = n0.req("POST", "/api/objects", {"id": "shared", "participants": [bob, carol]}, user="alice").json()["id"]
    for n in (n1, n2):
        assert wait_until(lambda n=n: n.req("GET", f"/api/objects/{oid}", user=users[n.domain]).status == 200)
    edits = {alice: 0, bob: 0, carol: 0}

    def edit(n: LocalNode, key: str) -> None:
        _edit(n, users[n.domain], oid, key)
        edits[f"{users[n.domain]}@{n.domain}"] += 1

    # connected: edits reach the others by push
    for n in (n0, n1, n2):
        edit(n, f"before-{n.domain}")
    expected: dict[str, Any] = {f"before-{n.domain}": f"before-{n.domain}" for n in (n0, n1, n2)}
    assert wait_until(lambda: all(_view(n, users[n.domain], oid) == expected for n in (n0, n1, n2)), timeout=60)

    # partition {n0} | {n1, n2}; both sides edit; every outbox entry is lost
    dead = f"http://127.0.0.1:{free_port()}"
    _point_peers(n0, {n1.domain: dead, n2.domain: dead})
    _point_peers(n1, {n0.domain: dead})
    _point_peers(n2, {n0.domain: dead})
    for i in range(3):
        edit(n0, f"a{i}")
    for i in range(2):
        edit(n1, f"b{i}")
        edit(n2, f"c{i}")
    # n1 and n2 still talk: their edits reach each other
    assert wait_until(lambda: _view(n1, "bob", oid) == _view(n2, "carol", oid), timeout=60)
    for n in (n0, n1, n2):
        _drop_outbox(n)
    expected.update({k: k for k in ("a0", "a1", "a2", "b0", "b1", "c0", "c1")})

    # heal n0 <-> n1 only: n0's edits reach n2 through n1 (anti-entropy relays them, with their credits)
    _point_peers(n0, {n1.domain: n1.fed_address})
    _point_peers(n1, {n0.domain: n0.fed_address})
    assert wait_until(lambda: all(_view(n, users[n.domain], oid) == expected for n in (n0, n1, n2)), timeout=90)
    assert wait_until(lambda: _ledger(n2, oid) == _ledger(n0, oid) == _ledger(n1, oid), timeout=90), [
        _ledger(n, oid) for n in (n0, n1, n2)
    ]

    # heal everything, then more edits and anti-entropy rounds must not count anything twice
    _point_peers(n0, {n2.domain: n2.fed_address})
    _point_peers(n2, {n0.domain: n0.fed_address})
    for n in (n0, n1, n2):
        edit(n, f"after-{n.domain}")
        expected[f"after-{n.domain}"] = f"after-{n.domain}"
    assert wait_until(lambda: all(_view(n, users[n.domain], oid) == expected for n in (n0, n1, n2)), timeout=90)
    assert wait_until(lambda: _ledger(n0, oid) == _ledger(n1, oid) == _ledger(n2, oid), timeout=90)
    ledgers = [_ledger(n, oid) for n in (n0, n1, n2)]
    assert ledgers[0] == ledgers[1] == ledgers[2], ledgers
    assert {who: e for who, (e, _b) in ledgers[0].items()} == edits, (ledgers[0], edits)
    # each node's own users' bytes are what it credited; every node agrees on them
    assert all(b > 0 for _e, b in ledgers[0].values())
    # a few more anti-entropy rounds (2 s interval) change nothing
    rounds = _rounds(n2)
    assert wait_until(lambda: _rounds(n2) >= rounds + 2, timeout=60)
    assert [_ledger(n, oid) for n in (n0, n1, n2)] == ledgers


def _rounds(node: LocalNode) -> float:
    text = request(node.metrics_port, "GET", "/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("p2pvalue_antientropy_rounds_total{") and 'result="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_edits_made_before_an_object_was_shared_are_counted_by_the_node_it_is_shared_with(
    nodes_factory: Any,
) -> None:
    """A node signs the credits of edits on an object no other node holds only when they first leave
    it (performance); a node the object is shared with later still counts each of them once."""
    n0, n1 = nodes_factory(2)
    alice, bob = n0.add_user("alice"), n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {}, user="alice").json()["id"]
    for k in ("a", "b", "c"):
        _edit(n0, "alice", oid, k)
    r = n0.req("PATCH", f"/api/objects/{oid}", {"add": [bob]}, user="alice")
    assert r.status == 200, r.body
    _edit(n0, "alice", oid, "d")  # made while shared: its credit leaves with the push
    assert wait_until(lambda: _ledger(n1, oid) == _ledger(n0, oid), timeout=60, interval=0.5), (
        _ledger(n0, oid),
        _ledger(n1, oid),
    )
    assert _ledger(n0, oid)[alice][0] == 4
    assert _view(n1, "bob", oid) == {"a": "a", "b": "b", "c": "c", "d": "d"}
    # the credits were signed once, and the signatures kept
    with sqlite3.connect(n0.dir / "data" / "node.sqlite3", timeout=30) as db:
        assert db.execute("SELECT COUNT(*) FROM ledger_credits WHERE sig = x''").fetchone()[0] == 0
