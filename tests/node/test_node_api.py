"""Client API against a real node process: objects, JSON ops, Yjs updates, access control, ledger,
WebSocket live updates."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pycrdt
from p2pvalue_node.testing import HOST, LocalNode


def _create(node: LocalNode, user: str, **body: Any) -> dict[str, Any]:
    r = node.req("POST", "/api/objects", body, user=user)
    assert r.status == 201, r.body
    return r.json()


def _ops(node: LocalNode, user: str, oid: str, *ops: dict[str, Any]) -> Any:
    return node.req("POST", f"/api/objects/{oid}/ops", {"ops": list(ops)}, user=user)


def test_create_read_list_and_json_ops(node: LocalNode) -> None:
    obj = _create(node, "alice", participants=[f"bob@{node.domain}"])
    oid = obj["id"]
    assert obj["creator"] == f"alice@{node.domain}"
    assert obj["participants"] == [f"alice@{node.domain}", f"bob@{node.domain}"]
    assert obj["data"] == {}
    r = _ops(
        node,
        "alice",
        oid,
        {"op": "set", "key": "title", "value": "Plan"},
        {"op": "set", "key": "tasks", "type": "list"},
        {"op": "set", "key": "notes", "type": "text", "value": "hello"},
        {"op": "set", "key": "meta", "type": "map", "value": {"n": 1}},
    )
    assert r.status == 200, r.body
    r = _ops(
        node,
        "bob",
        oid,
        {"op": "append", "path": ["tasks"], "value": "buy antennas"},
        {"op": "insert_text", "path": ["notes"], "index": 5, "text": " world"},
        {"op": "delete_text", "path": ["notes"], "index": 0, "length": 1},
        {"op": "set", "path": ["meta"], "key": "m", "value": [1, "x"]},
        {"op": "delete_key", "key": "title"},
    )
    assert r.status == 200, r.body
    view = node.req("GET", f"/api/objects/{oid}", user="alice").json()
    assert view["data"] == {"tasks": ["buy antennas"], "notes": "ello world", "meta": {"n": 1, "m": [1, "x"]}}
    assert len(view["state_hash"]) == 64
    # same content, same hash, whoever reads it
    assert node.req("GET", f"/api/objects/{oid}", user="bob").json()["state_hash"] == view["state_hash"]
    listed = node.req("GET", "/api/objects", user="bob").json()["objects"]
    assert [o["id"] for o in listed] == [oid]
    assert node.req("GET", "/api/objects", user="carol").json()["objects"] == []


def test_binary_yjs_update_and_state_roundtrip(node: LocalNode) -> None:
    oid = _create(node, "alice")["id"]
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    root["text"] = pycrdt.Text("from a Yjs client")
    root["n"] = 3
    r = node.req(
        "POST",
        f"/api/objects/{oid}/update",
        user="alice",
        raw=doc.get_update(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 200, r.body
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {"text": "from a Yjs client", "n": 3}
    # the binary state brings another Yjs replica to the same content
    state = node.req("GET", f"/api/objects/{oid}/state", user="alice")
    assert state.status == 200 and state.headers["content-type"] == "application/octet-stream"
    other = pycrdt.Doc()
    other.apply_update(state.body)
    assert other.get("root", type=pycrdt.Map).to_py() == {"text": "from a Yjs client", "n": 3.0}
    # asking with an up-to-date state vector returns an update that changes nothing
    sv = base64.b64encode(other.get_state()).decode()
    from urllib.parse import quote

    diff = node.req("GET", f"/api/objects/{oid}/state?sv={quote(sv, safe='')}", user="alice")
    assert diff.status == 200
    before = other.get_state()
    other.apply_update(diff.body)
    assert other.get_state() == before


def test_access_control(node: LocalNode) -> None:
    d = node.domain
    private = _create(node, "alice", participants=[f"bob@{d}"])["id"]
    # a non-participant cannot see, read or write it
    assert node.req("GET", f"/api/objects/{private}", user="carol").status == 404
    assert _ops(node, "carol", private, {"op": "set", "key": "x", "value": 1}).status == 404
    # a participant writes, but only the creator manages participants and the public flag
    assert _ops(node, "bob", private, {"op": "set", "key": "x", "value": 1}).status == 200
    r = node.req("PATCH", f"/api/objects/{private}", {"add": [f"carol@{d}"]}, user="bob")
    assert r.status == 403
    r = node.req("PATCH", f"/api/objects/{private}", {"add": [f"carol@{d}"], "remove": [f"bob@{d}"]}, user="alice")
    assert r.status == 200 and r.json()["participants"] == [f"alice@{d}", f"carol@{d}"]
    assert node.req("GET", f"/api/objects/{private}", user="carol").json()["data"] == {"x": 1}
    assert _ops(node, "bob", private, {"op": "set", "key": "x", "value": 2}).status == 404
    # the creator cannot be removed; unknown local users cannot be added
    assert node.req("PATCH", f"/api/objects/{private}", {"remove": [f"alice@{d}"]}, user="alice").status == 400
    assert node.req("PATCH", f"/api/objects/{private}", {"add": [f"nobody@{d}"]}, user="alice").status == 400
    # public objects: everyone reads, only participants write
    public = _create(node, "alice", public=True)["id"]
    assert node.req("GET", f"/api/objects/{public}", user="bob").status == 200
    assert _ops(node, "bob", public, {"op": "set", "key": "x", "value": 1}).status == 403
    r = node.req("PATCH", f"/api/objects/{public}", {"public": False}, user="alice")
    assert r.status == 200 and r.json()["public"] is False
    assert node.req("GET", f"/api/objects/{public}", user="bob").status == 404
    # remote participants are accepted as addresses
    assert _create(node, "alice", participants=["dave@other.example"])["participants"][1] == "dave@other.example"
    # no token, a wrong token, and a client token on an admin route
    assert node.req("GET", "/api/objects").status == 401
    assert node.req("GET", "/api/objects", token="wrong").status == 401
    assert node.req("POST", "/api/admin/accounts", {"username": "eve"}, user="alice").status == 401


def test_ledger_counts_edits_and_bytes(node: LocalNode) -> None:
    d = node.domain
    oid = _create(node, "alice", participants=[f"bob@{d}"])["id"]
    other = _create(node, "carol")["id"]
    for i in range(3):
        assert _ops(node, "alice", oid, {"op": "set", "key": f"k{i}", "value": i}).status == 200
    assert _ops(node, "bob", oid, {"op": "set", "key": "b", "value": "x" * 100}).status == 200
    assert _ops(node, "carol", other, {"op": "set", "key": "c", "value": 1}).status == 200
    led = node.req("GET", f"/api/contributions?object={oid}", user="alice").json()
    rows = {r["contributor"]: r for r in led["contributions"]}
    assert set(rows) == {f"alice@{d}", f"bob@{d}"}
    assert rows[f"alice@{d}"]["edits"] == 3
    assert rows[f"bob@{d}"]["edits"] == 1 and rows[f"bob@{d}"]["bytes"] > 100
    assert rows[f"alice@{d}"]["first_ms"] <= rows[f"alice@{d}"]["last_ms"]
    assert led["totals"]["edits"] == 4 and led["totals"]["contributors"] == 2
    # alice does not see carol's private object in her ledger view; the admin sees everything
    mine = node.req("GET", "/api/contributions", user="alice").json()["contributions"]
    assert all(r["object_id"] != other for r in mine)
    everything = node.req("GET", "/api/contributions", token="admin-token-for-tests-0123456789").json()
    assert everything["totals"]["edits"] == 5 and everything["totals"]["objects"] == 2
    totals = node.req("GET", "/api/contributions/totals", user="bob").json()
    assert totals["edits"] == 5 and totals["contributors"] == 3 and totals["domain"] == d


def test_errors_are_json_4xx(node: LocalNode) -> None:
    oid = _create(node, "alice")["id"]
    cases = [
        node.req("POST", "/api/objects", user="alice", raw=b"{not json", headers={"Content-Type": "application/json"}),
        node.req("POST", "/api/objects", {"public": "yes"}, user="alice"),
        node.req("POST", "/api/objects", {"participants": "bob"}, user="alice"),
        node.req("POST", "/api/objects", {"participants": ["not-an-address"]}, user="alice"),
        node.req("POST", "/api/objects", {"unknown": 1}, user="alice"),
        node.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "explode"}]}, user="alice"),
        node.req(
            "POST",
            f"/api/objects/{oid}/ops",
            {"ops": [{"op": "append", "path": ["missing"], "value": 1}]},
            user="alice",
        ),
        node.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": 5, "value": 1}]}, user="alice"),
        node.req("POST", f"/api/objects/{oid}/update", user="alice", raw=b"\xff\xfe garbage"),
        node.req("POST", f"/api/objects/{oid}/update", user="alice", raw=b""),
        node.req(
            "POST", "/api/objects", user="alice", raw=b"x" * (2 << 20), headers={"Content-Type": "application/json"}
        ),
        node.req("GET", "/no/such/route", user="alice"),
        node.req("DELETE", "/api/objects", user="alice"),
        node.req("GET", "/api/objects/..%2F..%2Fetc", user="alice"),
        node.req("GET", f"/api/objects/{oid}/state?sv=!!!", user="alice"),
    ]
    statuses = [c.status for c in cases]
    assert all(400 <= s < 500 for s in statuses), statuses
    for c in cases:
        assert "error" in c.json()
    assert statuses[10] == 413 and statuses[11] == 404 and statuses[12] == 405
    # the failed ops changed nothing, and the node is still fine
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {}
    assert node.req("GET", "/health").json()["status"] == "ok"


def test_admin_creates_accounts_and_metrics_are_served(node: LocalNode) -> None:
    from p2pvalue_node.testing import ADMIN, request

    r = node.req("POST", "/api/admin/accounts", {"username": "Bad Name"}, token=ADMIN)
    assert r.status == 400
    r = node.req("GET", "/api/admin/accounts", token=ADMIN)
    assert r.json()["accounts"] == [f"{u}@{node.domain}" for u in ("alice", "bob", "carol")]
    assert node.req("GET", "/api/whoami", user="bob").json() == {"user": f"bob@{node.domain}"}
    text = request(node.metrics_port, "GET", "/metrics").body.decode()
    for name in (
        "p2pvalue_http_request_duration_seconds_bucket",
        "p2pvalue_objects ",
        "process_resident_memory_bytes",
        "p2pvalue_outbox_depth",
        "p2pvalue_peers_reachable",
        'le="0.001"',
        'le="60.0"',
    ):
        assert name in text, name
    # the metrics listener serves metrics only, not the API
    assert request(node.metrics_port, "GET", "/api/objects").status == 404


def test_websocket_live_updates(node: LocalNode) -> None:
    oid = _create(node, "alice", participants=[f"bob@{node.domain}"])["id"]

    async def run() -> tuple[dict[str, Any], dict[str, Any], Any]:
        url = f"http://{HOST}:{node.client_port}/api/ws"
        async with aiohttp.ClientSession() as s:
            async with (
                s.ws_connect(url, headers={"Authorization": f"Bearer {node.tokens['bob']}"}) as bob,
                s.ws_connect(url, headers={"Authorization": f"Bearer {node.tokens['alice']}"}) as alice,
            ):
                await bob.send_json({"type": "subscribe", "object": oid})
                sub = await asyncio.wait_for(bob.receive_json(), 10)
                # alice writes a Yjs update over her socket and gets an ack once it is durable
                doc = pycrdt.Doc()
                doc.apply_update(base64.b64decode(sub["state"]))
                doc.get("root", type=pycrdt.Map)["live"] = "yes"
                await alice.send_json(
                    {"type": "update", "object": oid, "id": 7, "update": base64.b64encode(doc.get_update()).decode()}
                )
                ack = await asyncio.wait_for(alice.receive_json(), 10)
                pushed = await asyncio.wait_for(bob.receive_json(), 10)
                # errors come back as messages, the socket stays usable
                await bob.send_str("{broken")
                err = await asyncio.wait_for(bob.receive_json(), 10)
                await bob.send_json(
                    {"type": "ops", "object": oid, "id": 1, "ops": [{"op": "set", "key": "by", "value": "bob"}]}
                )
                replies = [await asyncio.wait_for(bob.receive_json(), 10) for _ in range(2)]
                return ack, pushed, (err, replies)

    ack, pushed, (err, replies) = asyncio.run(run())
    assert ack == {"type": "ack", "id": 7, "object": oid}
    assert pushed["type"] == "update" and pushed["origin_node"] == node.domain
    replica = pycrdt.Doc()
    replica.apply_update(base64.b64decode(pushed["update"]))
    assert replica.get("root", type=pycrdt.Map).to_py() == {"live": "yes"}
    assert err["type"] == "error"
    assert {m["type"] for m in replies} == {"ack", "update"}
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {"live": "yes", "by": "bob"}

    # a non-participant cannot subscribe to a private object
    async def intruder() -> Any:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://{HOST}:{node.client_port}/api/ws?token={node.tokens['carol']}") as ws:
                await ws.send_json({"type": "subscribe", "object": oid})
                return await asyncio.wait_for(ws.receive_json(), 10)

    assert asyncio.run(intruder())["type"] == "error"


def test_documents_are_evicted_and_reloaded(nodes_factory: Any) -> None:
    from p2pvalue_node.testing import request

    (n,) = nodes_factory(1, limits={"max_loaded_documents": 3}, storage={"compact_every": 3})
    n.add_user("alice")
    ids = []
    for i in range(8):
        oid = _create(n, "alice")["id"]
        for j in range(4):  # crosses a compaction
            assert _ops(n, "alice", oid, {"op": "set", "key": f"k{j}", "value": i}).status == 200
        ids.append(oid)
    for i, oid in enumerate(ids):
        assert n.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {f"k{j}": i for j in range(4)}
    metrics = request(n.metrics_port, "GET", "/metrics").body.decode()
    assert "p2pvalue_objects 8.0" in metrics and "p2pvalue_objects_loaded 3.0" in metrics


def test_openapi_document_lists_the_routes(node: LocalNode) -> None:
    doc = node.req("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/objects", "/api/objects/{object_id}/ops", "/api/contributions"} <= set(doc["paths"])
    ops_schema = doc["components"]["schemas"]["Ops"]
    assert ops_schema["properties"]["ops"]["type"] == "array"
    assert "Op" in doc["components"]["schemas"]
