"""Issue 10, critical 1-3: no update crashes or poisons a node, on any entry point, on a 1 MiB stack.

The deep updates here crashed the node with SIGSEGV before the pre-parse (yupdate.check_update)
existed; the stored one crashed every read of its object on every restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

import aiohttp
import pycrdt
import pytest
from p2pvalue_node.documents import decode_state_vector
from p2pvalue_node.signing import sign_headers
from p2pvalue_node.testing import HOST, LocalNode, request
from p2pvalue_node.yupdate import MAX_NESTING, UpdateRejected, check_update, json_depth
from yjs_bytes import any_update, deep_update, varuint

OCTET = {"Content-Type": "application/octet-stream"}


def _alive(node: LocalNode) -> None:
    assert node.proc is not None and node.proc.poll() is None, "the node process died"
    assert node.req("GET", "/health").status == 200


def test_check_update_accepts_what_pycrdt_writes() -> None:
    doc = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    root = doc.get("root", type=pycrdt.Map)
    root["a"] = 1
    root["s"] = "héllo 😀"
    root["l"] = pycrdt.Array([1, [2, {"x": [3]}], None, True, 2.5, b"bin", 2**40])
    root["t"] = pycrdt.Text("hello 😀 world")
    root["t"].insert(3, "XX")
    del root["t"][0:2]
    root["t"].format(1, 4, {"bold": True})
    root["m"] = pycrdt.Map({"n": pycrdt.Map({"k": pycrdt.Array([pycrdt.Map({"z": 1})])})})
    del root["a"]
    doc.get("xml", type=pycrdt.XmlFragment).children.append(pycrdt.XmlElement("p", {"c": "1"}, [pycrdt.XmlText("hi")]))
    for u in [*updates, doc.get_update()]:
        check_update(u)
    shape = check_update(doc.get_update())
    assert shape.max_value_depth == 3 and shape.nested_types >= 3 and shape.delete_ranges >= 1


@pytest.mark.parametrize(
    "bad,why",
    [
        (deep_update(MAX_NESTING + 1), "nests deeper"),
        (deep_update(26_000), "nests deeper"),
        (deep_update(1) + b"\x00", "trailing"),
        (deep_update(1)[:-3], "truncated"),
        (b"\x01\x05\x01\x00\x08", "exceeds the bytes left"),  # 5 structs announced, 1 byte left
        (any_update(b"\x05"), "unknown Any tag"),
        (b"\x00\x01\x01\x01" + varuint(2**31 - 1) + varuint(5), "beyond"),  # a delete range past 2^31
    ],
)
def test_check_update_refuses(bad: bytes, why: str) -> None:
    with pytest.raises(UpdateRejected, match=why):
        check_update(bad)


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": "[[[[", "b": [1, {"c": []}]}') == 4
    assert json_depth('"plain"') == 0


def test_limits_hold_on_a_1mib_stack(tmp_path: Any) -> None:
    """What the node accepts can be applied, read and re-encoded in a thread with a 1 MiB stack
    (small devices); what it refuses is refused before pycrdt (a crash would end the subprocess)."""
    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        import pycrdt
        from p2pvalue_node.documents import json_view
        from p2pvalue_node.node import MAX_TYPE_DEPTH
        from p2pvalue_node.yupdate import MAX_NESTING, UpdateRejected, check_update, type_depth
        from yjs_bytes import deep_update
        out = []
        def run():
            # the deepest value the node accepts, inside the deepest shared types it accepts
            src = pycrdt.Doc()
            cur = src.get("root", type=pycrdt.Map)
            for _ in range(MAX_TYPE_DEPTH - 1):
                cur["m"] = pycrdt.Map()
                cur = cur["m"]
            value = None
            for _ in range(MAX_NESTING):
                value = [value]
            cur["v"] = value
            nested = src.get_update()
            shape = check_update(nested)
            assert shape.max_value_depth == MAX_NESTING, shape
            doc = pycrdt.Doc()
            doc.apply_update(nested)
            assert type_depth(doc, "root") == MAX_TYPE_DEPTH
            doc.apply_update(deep_update(MAX_NESTING))
            view = json_view(doc)
            copy = pycrdt.Doc()
            copy.apply_update(doc.get_update())
            assert json_view(copy) == view
            for depth in (MAX_NESTING + 1, 6_000, 26_000):  # 6,000 deep is the 12 KB update of the issue
                try:
                    check_update(deep_update(depth))
                except UpdateRejected:
                    continue
                raise AssertionError(f"depth {{depth}} accepted")
            out.append("ok")
        threading.stack_size(1 << 20)
        t = threading.Thread(target=run)
        t.start()
        t.join()
        print(out[0] if out else "failed")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stdout, res.stderr[-2000:])


def test_deep_updates_refused_on_every_entry_point(nodes_factory: Any) -> None:
    n0, n1 = nodes_factory(2, start=False)
    n0.start()
    n0.add_user("alice")
    oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
    assert (
        n0.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "x", "value": 1}]}, user="alice").status
        == 200
    )
    crash = deep_update(26_000)  # ~54 KB: SIGSEGV in pycrdt on an 8 MiB stack
    # HTTP
    r = n0.req("POST", f"/api/objects/{oid}/update", user="alice", raw=crash, headers=OCTET)
    assert r.status == 400 and "nests deeper" in r.json()["error"], r.body[:300]
    _alive(n0)
    # deep but below the old crash depth: it used to be stored, and crashed every later read
    r = n0.req("POST", f"/api/objects/{oid}/update", user="alice", raw=deep_update(15_000), headers=OCTET)
    assert r.status == 400
    # a value 600 deep used to make the object's view silently {} (item 18)
    r = n0.req("POST", f"/api/objects/{oid}/update", user="alice", raw=deep_update(600), headers=OCTET)
    assert r.status == 400
    # the deepest accepted value is stored and reads back
    r = n0.req("POST", f"/api/objects/{oid}/update", user="alice", raw=deep_update(MAX_NESTING, "ok"), headers=OCTET)
    assert r.status == 200, r.body

    # WebSocket
    async def ws() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(
                f"http://{HOST}:{n0.client_port}/api/ws", headers={"Authorization": f"Bearer {n0.tokens['alice']}"}
            ) as w,
        ):
            await w.send_json({"type": "update", "object": oid, "update": base64.b64encode(crash).decode(), "id": 7})
            return dict(await w.receive_json(timeout=20))

    reply = asyncio.run(ws())
    assert reply["type"] == "error" and reply["id"] == 7 and "nests deeper" in reply["error"], reply
    _alive(n0)
    # a signed federation push from a trusted peer
    from p2pvalue_node.keys import load_key

    body = json.dumps(
        {
            "items": [
                {
                    "object_id": oid,
                    "meta": None,
                    "updates": [
                        {
                            "update": base64.b64encode(crash).decode(),
                            "origin_node": n1.domain,
                            "origin_ts_ms": 1,
                            "author": None,
                        }
                    ],
                }
            ]
        }
    ).encode()
    headers = sign_headers(load_key(n1.dir / "signing.key"), "POST", "/federation/v1/push", n1.domain, n0.domain, body)
    r = request(
        n0.fed_port, "POST", "/federation/v1/push", raw=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status == 200
    (result,) = r.json()["results"]
    assert result["ok"] is False and "nests deeper" in result["error"], result
    _alive(n0)
    # ops cannot build such values either
    deep_value: Any = None
    for _ in range(MAX_NESTING + 1):
        deep_value = [deep_value]
    r = n0.req(
        "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "y", "value": deep_value}]}, user="alice"
    )
    assert r.status == 422 and "nests deeper" in r.json()["error"]
    # shared types nested through a binary update are measured too
    src = pycrdt.Doc()
    cur = src.get("root", type=pycrdt.Map)
    for _ in range(MAX_NESTING + 3):
        cur["m"] = pycrdt.Map()
        cur = cur["m"]
    r = n0.req("POST", f"/api/objects/{oid}/update", user="alice", raw=src.get_update(), headers=OCTET)
    assert r.status == 400 and "nest deeper" in r.json()["error"], r.body
    view = n0.req("GET", f"/api/objects/{oid}", user="alice").json()
    assert view["data"]["x"] == 1 and "m" not in view["data"]
    # nothing refused reached the peer: it starts now and converges on what was accepted
    n1.start()
    n1.add_user("bob")
    from p2pvalue_node.testing import wait_until

    assert wait_until(
        lambda: (
            n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200
            and n1.req("GET", f"/api/objects/{oid}", user="bob").json()["state_hash"] == view["state_hash"]
        )
    )
    _alive(n0)
    _alive(n1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pvalue_node.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_poisoned_store_is_quarantined_and_the_node_keeps_serving(node: LocalNode) -> None:
    """A poisoned row written by an older version (or by hand) no longer takes the node down on
    every read and every restart: the object is quarantined, everything else is served."""
    bad = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    good = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    for oid in (bad, good):
        node.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "x", "value": 1}]}, user="alice")
    node.stop()
    db = sqlite3.connect(node.dir / "data" / "node.sqlite3")
    db.execute(
        "INSERT INTO updates (object_id, digest, data, origin_node, origin_ts_ms, author) VALUES (?, ?, ?, ?, ?, ?)",
        (bad, b"poison", deep_update(15_000), node.domain, 1, None),
    )
    db.commit()
    db.close()
    node.start()
    r = node.req("GET", f"/api/objects/{bad}", user="alice")
    assert r.status == 503 and "quarantined" in r.json()["error"], r.body[:300]
    _alive(node)
    assert node.req("GET", f"/api/objects/{good}", user="alice").json()["data"] == {"x": 1}
    assert (
        node.req(
            "POST", f"/api/objects/{bad}/ops", {"ops": [{"op": "set", "key": "y", "value": 2}]}, user="alice"
        ).status
        == 503
    )
    listed = json.loads(_cli("quarantine", "--config", str(node.config_path), "--list").stdout)
    assert [q["object_id"] for q in listed] == [bad] and "cannot be loaded" in listed[0]["reason"]
    # the operator's command: take a healthy object out of service, and put it back
    node.stop()
    res = _cli("quarantine", "--config", str(node.config_path), good, "--reason", "checking it")
    assert res.returncode == 0, res.stderr
    node.start()
    r = node.req("GET", f"/api/objects/{good}", user="alice")
    assert r.status == 503 and "checking it" in r.json()["error"]
    node.stop()
    assert _cli("quarantine", "--config", str(node.config_path), good, "--release").returncode == 0
    assert _cli("quarantine", "--config", str(node.config_path), "nope").returncode == 2
    node.start()
    assert node.req("GET", f"/api/objects/{good}", user="alice").status == 200
    assert node.req("GET", f"/api/objects/{bad}", user="alice").status == 503  # still poisoned
    _alive(node)


# found by the fuzz target (commit 1814b43): a format item under root map key "" that pycrdt lists as a
# key and then cannot look up, so every later view of the object failed (503)
FORMAT_IN_MAP = bytes.fromhex("01010000260104726f6f7400000322782200")


def _format_after(client: int, origin: tuple[int, int]) -> bytes:
    """A format item whose origin is an existing map entry: it inherits that entry's map and key."""
    item = bytes([6 | 0x80]) + varuint(origin[0]) + varuint(origin[1]) + b"\x00" + b'\x03"x"'
    return varuint(1) + varuint(1) + varuint(client) + varuint(0) + item + varuint(0)


def test_format_items_in_a_map_are_refused_before_they_are_stored(node: LocalNode) -> None:
    oid = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    ops = {"ops": [{"op": "set", "key": "a", "value": 1}]}
    assert node.req("POST", f"/api/objects/{oid}/ops", ops, user="alice").status == 200
    before = node.req("GET", f"/api/objects/{oid}", user="alice").json()
    (client_of_a,) = _clients(node, oid, "alice")
    for bad in (FORMAT_IN_MAP, _format_after(991, (client_of_a, 0)), _format_after(992, (4242, 0))):
        r = node.req("POST", f"/api/objects/{oid}/update", user="alice", raw=bad, headers=OCTET)
        assert r.status == 400, (bad.hex(), r.status, r.body)
        view = node.req("GET", f"/api/objects/{oid}", user="alice")
        assert view.status == 200 and view.json()["data"] == before["data"] == {"a": 1}, view.body
    # nothing of them was stored: the object reads back after a restart as well
    node.stop()
    node.start()
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["state_hash"] == before["state_hash"]
    # formatting text (what format items are for) is still accepted
    src = pycrdt.Doc()
    src.apply_update(node.req("GET", f"/api/objects/{oid}/state", user="alice").body)
    root = src.get("root", type=pycrdt.Map)
    sv = src.get_state()
    root["t"] = pycrdt.Text("hello")
    root["t"].format(0, 3, {"bold": True})
    r = node.req("POST", f"/api/objects/{oid}/update", user="alice", raw=src.get_update(sv), headers=OCTET)
    assert r.status == 200, r.body
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {"a": 1, "t": "hello"}


def _clients(node: LocalNode, oid: str, user: str) -> set[int]:
    doc = pycrdt.Doc()
    doc.apply_update(node.req("GET", f"/api/objects/{oid}/state", user=user).body)
    return set(decode_state_vector(doc.get_state()))
