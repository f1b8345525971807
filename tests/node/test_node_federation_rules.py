"""Issue 10, medium 9, 10, 11, 15: a trusted peer cannot forge object identity or metadata, cannot
inflate the ledger, and cannot get replays through a full nonce store (real node, signed requests)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pycrdt
from p2pvalue_node.keys import load_key
from p2pvalue_node.signing import SignatureRejected, Verifier, sign_headers
from p2pvalue_node.testing import LocalNode, request, wait_until


def _signed(n0: LocalNode, n1: LocalNode, path: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    headers = sign_headers(load_key(n1.dir / "signing.key"), "POST", path, n1.domain, n0.domain, body)
    r = request(n0.fed_port, "POST", path, raw=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status == 200, (r.status, r.body[:300])
    return r.json()


def _push(n0: LocalNode, n1: LocalNode, oid: str, meta: dict[str, Any] | None, updates: list[dict[str, Any]]) -> Any:
    (result,) = _signed(
        n0, n1, "/federation/v1/push", {"items": [{"object_id": oid, "meta": meta, "updates": updates}]}
    )["results"]
    return result


def _update(key: str, value: Any, client: int = 77) -> str:
    doc = pycrdt.Doc(client_id=client)
    doc.get("root", type=pycrdt.Map)[key] = value
    return base64.b64encode(doc.get_update()).decode()


def test_forged_metadata_and_id_collisions_are_refused(nodes_factory: Any) -> None:
    n0, n1, n2 = nodes_factory(3, start=False)
    n0.start()
    n0.add_user("alice")
    a, b, c = f"alice@{n0.domain}", f"bob@{n1.domain}", f"carol@{n2.domain}"
    # an object "created" by a user of this node (10)
    r = _push(n0, n1, "forged-local", {"creator": a, "participants": [a, b], "public": True, "version": 1}, [])
    assert r["ok"] is False
    # an object "created" by another peer's user (10)
    r = _push(n0, n1, "forged-third", {"creator": c, "participants": [c, b, a], "version": 1}, [])
    assert r["ok"] is False
    # local participants without an account (10)
    r = _push(n0, n1, "ghosts", {"creator": b, "participants": [b, a, f"ghost@{n0.domain}"], "version": 1}, [])
    assert r["ok"] is False and "no account" in r["error"]
    # a genuine one is still accepted
    r = _push(n0, n1, "genuine", {"creator": b, "participants": [b, a], "version": 1}, [])
    assert r["ok"] is True, r
    listed = {o["id"] for o in n0.req("GET", "/api/objects", user="alice").json()["objects"]}
    assert listed == {"genuine"}
    # the same id pre-created elsewhere cannot reach into the real object (9)
    real = n0.req("POST", "/api/objects", {"id": "plan", "participants": [b]}, user="alice").json()
    plan = real["id"]
    n0.req("POST", f"/api/objects/{plan}/ops", {"ops": [{"op": "set", "key": "x", "value": 1}]}, user="alice")
    r = _push(
        n0,
        n1,
        plan,
        {"creator": b, "participants": [b, a], "version": 5},
        [{"update": _update("x", "overwritten"), "origin_node": n1.domain, "origin_ts_ms": 1, "author": b}],
    )
    assert r["ok"] is False
    view = n0.req("GET", f"/api/objects/{plan}", user="alice").json()
    assert view["data"] == {"x": 1} and view["participants"] == real["participants"]
    sync = _signed(
        n0,
        n1,
        "/federation/v1/sync",
        {"objects": [{"id": plan, "sv": "AA==", "meta": {"creator": b, "participants": [b, a], "version": 9}}]},
    )
    assert all(o["id"] != plan for o in sync["objects"])  # nothing of the real object is handed out
    # nor can a peer announce an object in alice's id namespace (20: ids derived from (creator, name))
    taken = plan.replace("plan.", "other.", 1)  # the form, with alice's hash: derived for nobody
    for oid in (taken, "other." + hashlib.sha256(f"{a}\0other".encode()).hexdigest()[:16]):
        r = _push(n0, n1, oid, {"creator": b, "participants": [b, a], "version": 1}, [])
        assert r["ok"] is False and "another creator" in r["error"], r
    oid = "other." + hashlib.sha256(f"{b}\0other".encode()).hexdigest()[:16]  # bob's own: accepted
    assert _push(n0, n1, oid, {"creator": b, "participants": [b, a], "version": 1}, [])["ok"] is True


def _ledger(node: LocalNode, contributor: str) -> dict[str, Any]:
    from p2pvalue_node.testing import ADMIN

    r = request(node.client_port, "GET", f"/api/contributions?contributor={contributor}", token=ADMIN)
    rows = [t for t in r.json()["totals"]["per_contributor"] if t["contributor"] == contributor]
    return dict(rows[0]) if rows else {"edits": 0}


def _credit(signer: LocalNode, oid: str, update_b64: str, author: str, at_ms: int = 1, **change: Any) -> Any:
    """A ledger credit for the edit `update_b64`, signed with `signer`'s key (then optionally altered)."""

    from p2pvalue_node.ledger import Credit

    raw = base64.b64decode(update_b64)
    c = Credit.signed(load_key(signer.dir / "signing.key"), oid, hashlib.sha256(raw).digest(), author, len(raw), at_ms)
    return {**c.to_wire(), **change}


def test_ledger_counts_each_edit_once(nodes_factory: Any) -> None:
    n0, n1, n2 = nodes_factory(3, start=False, storage={"compact_every": 2})
    n0.start()
    a = n0.add_user("alice")
    b = f"bob@{n1.domain}"
    meta = {"creator": b, "participants": [b, a], "version": 1}
    x = _update("x", 1)
    edit = {"update": x, "origin_node": n1.domain, "origin_ts_ms": 1, "author": b}

    def push(oid: str, updates: list[dict[str, Any]], credits: list[Any]) -> Any:
        item = {"object_id": oid, "meta": meta, "updates": updates, "credits": credits}
        (result,) = _signed(n0, n1, "/federation/v1/push", {"items": [item]})["results"]
        return result

    # an author named on a pushed update is not a credit (only a credit its home node signed is)
    assert push("obj", [edit], [])["ok"]
    assert _ledger(n0, b)["edits"] == 0
    # the credit: counted once, even redelivered after a compaction dropped the stored update row
    assert push("obj", [edit], [_credit(n1, "obj", x, b, at_ms=10**15)])["ok"]
    for i in range(3):
        assert push("obj", [{**edit, "update": _update(f"k{i}", i, client=100 + i), "author": None}], [])["ok"]
    assert push("obj", [edit], [_credit(n1, "obj", x, b, at_ms=10**15)])["ok"]
    # forged or misplaced credits are skipped: bob's edit signed by a third node, a local user's edit
    # signed by the peer, a credit whose size was altered after signing, one signed for another object,
    # and one that is malformed
    y = _update("y", 2, client=300)
    assert push("obj", [{**edit, "update": y}], [_credit(n2, "obj", y, b)])["ok"]
    assert push("obj", [], [_credit(n1, "obj", y, a)])["ok"]
    assert push("obj", [], [_credit(n1, "obj", y, b, bytes=10**6)])["ok"]
    assert push("obj2", [], [_credit(n1, "obj", y, b)])["ok"]
    assert push("obj", [], [{"digest": "zz", "author": b}])["ok"]
    # an update with trailing junk is refused whole, its credit with it
    junk = base64.b64encode(base64.b64decode(_update("z", 3, client=301)) + b"\x00").decode()
    assert not push("obj", [{**edit, "update": junk}], [_credit(n1, "obj", junk, b)])["ok"]
    row = _ledger(n0, b)
    assert row["edits"] == 1, row
    assert _ledger(n0, a)["edits"] == 0
    # the peer's far-future timestamp was not taken as is
    from p2pvalue_node.storage import now_ms

    assert row["last_ms"] <= now_ms()


def test_a_full_nonce_store_refuses_instead_of_forgetting() -> None:
    from p2pvalue_node.keys import generate

    key = generate()
    v = Verifier("n0.test", {"n1.test": key.public_b64}, max_nonces=3)
    sent = []
    for _ in range(3):
        h = sign_headers(key, "POST", "/p", "n1.test", "n0.test", b"")
        v.verify("POST", "/p", h, b"")
        sent.append(h)
    fourth = sign_headers(key, "POST", "/p", "n1.test", "n0.test", b"")
    try:
        v.verify("POST", "/p", fourth, b"")
        raise AssertionError("a fourth request was accepted past the nonce cap")
    except SignatureRejected as exc:
        assert exc.status == 503
    for h in sent:  # none of the remembered ones was forgotten: replays are still refused
        try:
            v.verify("POST", "/p", h, b"")
            raise AssertionError("a replay was accepted")
        except SignatureRejected as exc:
            assert "replayed" in exc.reason


def test_a_request_captured_before_a_restart_is_refused_after_it(nodes_factory: Any) -> None:
    """Issue 10 item 15: the replay store survives a restart (nonces are kept in SQLite until their
    timestamp leaves the skew window)."""
    n0, n1 = nodes_factory(2, start=False)
    n0.start()
    a = n0.add_user("alice")
    b = f"bob@{n1.domain}"
    x = _update("x", 1)
    item = {
        "object_id": "obj",
        "meta": {"creator": b, "participants": [b, a], "version": 1},
        "updates": [{"update": x, "origin_node": n1.domain, "origin_ts_ms": 1, "author": b}],
        "credits": [_credit(n1, "obj", x, b)],
    }
    body = json.dumps({"items": [item]}).encode()
    headers = {
        **sign_headers(load_key(n1.dir / "signing.key"), "POST", "/federation/v1/push", n1.domain, n0.domain, body),
        "Content-Type": "application/json",
    }
    assert request(n0.fed_port, "POST", "/federation/v1/push", raw=body, headers=headers).status == 200
    again = request(n0.fed_port, "POST", "/federation/v1/push", raw=body, headers=headers)
    assert again.status == 401 and b"replayed" in again.body
    before = _ledger(n0, b)
    assert before["edits"] == 1
    n0.stop()
    n0.start()
    replay = request(n0.fed_port, "POST", "/federation/v1/push", raw=body, headers=headers)
    assert replay.status == 401 and b"replayed" in replay.body, (replay.status, replay.body[:200])
    assert _ledger(n0, b) == before
    # a fresh request is still accepted after the restart
    assert _push(n0, n1, "obj", item["meta"], [])["ok"] is True


def _pushes_received(n: LocalNode) -> float:
    prefix = 'p2pvalue_federation_requests_received_total{path="/federation/v1/push"}'
    lines = request(n.metrics_port, "GET", "/metrics").body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_an_edit_that_arrives_before_its_objects_announcement_is_offered_again(nodes_factory: Any) -> None:
    """Only the home node announces an object. A participant's edit can reach a third node before the
    home's announcement does (both are sent when a partition heals, or when a participant is added):
    the third node answers "retry", and the edit is offered again instead of waiting for anti-entropy
    (turned off here: an hour)."""
    home, n1, n2 = nodes_factory(3, start=False, federation={"antientropy_interval_s": 3600.0})
    n1.start()
    n2.start()
    bob, carol = n1.add_user("bob"), n2.add_user("carol")
    alice = f"alice@{home.domain}"
    oid = "race"
    meta = {"creator": alice, "participants": [alice, bob, carol], "version": 1}
    first = {"update": _update("a", 1), "origin_node": home.domain, "origin_ts_ms": 1, "author": alice}
    assert _push(n1, home, oid, meta, [first])["ok"] is True  # bob's node knows the object, carol's not yet
    r = n1.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "b", "value": 2}]}, user="bob")
    assert r.status == 200, r.body
    assert wait_until(lambda: _pushes_received(n2) >= 1, 20), "bob's node never offered the edit to carol's"
    assert n2.req("GET", f"/api/objects/{oid}", user="carol").status == 404
    assert _push(n2, home, oid, meta, [first])["ok"] is True  # the home's announcement arrives
    seen = wait_until(lambda: n2.req("GET", f"/api/objects/{oid}", user="carol").json().get("data") == {"a": 1, "b": 2})
    assert seen, n2.req("GET", f"/api/objects/{oid}", user="carol").json()
