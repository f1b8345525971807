"""SIGKILL during a burst of writes: every acknowledged update is there after a restart."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from typing import Any

from p2pvalue_node.testing import HOST, LocalNode, wait_until

WRITERS = 8
MAX_PER_WRITER = 300


def _writer(node: LocalNode, token: str, oid: str, wid: int, acked: list[str], stop: threading.Event) -> None:
    conn = http.client.HTTPConnection(HOST, node.client_port, timeout=10)
    try:
        for i in range(MAX_PER_WRITER):
            if stop.is_set():
                return
            key = f"w{wid}-{i}"
            body = json.dumps(
                {"ops": [{"op": "set", "key": key, "value": i}, {"op": "append", "path": ["log"], "value": key}]}
            )
            try:
                conn.request(
                    "POST",
                    f"/api/objects/{oid}/ops",
                    body=body,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                return  # the node is gone: this write was not acknowledged
            if resp.status == 200:
                acked.append(key)
    finally:
        conn.close()


def _ws_writer(node: LocalNode, token: str, oid: str, wid: int, acked: list[str], stop: threading.Event) -> None:
    """Writes over the WebSocket: an update counts as acknowledged when its ack message arrives."""
    import aiohttp

    async def run() -> None:
        try:
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(f"http://{HOST}:{node.client_port}/api/ws?token={token}") as ws:
                    for i in range(MAX_PER_WRITER):
                        if stop.is_set():
                            return
                        key = f"ws{wid}-{i}"
                        await ws.send_json(
                            {"type": "ops", "object": oid, "id": key, "ops": [{"op": "set", "key": key, "value": i}]}
                        )
                        while True:  # skip the echoed updates of other writers
                            msg = await asyncio.wait_for(ws.receive_json(), 10)
                            if msg.get("type") == "ack" and msg.get("id") == key:
                                acked.append(key)
                                break
        except (TimeoutError, aiohttp.ClientError, TypeError, ValueError, ConnectionError):
            return  # the node is gone

    asyncio.run(run())


def test_sigkill_loses_no_acknowledged_update(nodes_factory: Any) -> None:
    # small compaction interval: the burst also crosses several snapshot compactions
    (node,) = nodes_factory(1, storage={"compact_every": 25})
    node.add_user("alice")
    token = node.tokens["alice"]
    oid = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    assert (
        node.req(
            "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "log", "type": "list"}]}, user="alice"
        ).status
        == 200
    )
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(node, token, oid, w, acked, stop)) for w in range(WRITERS)]
    threads += [threading.Thread(target=_ws_writer, args=(node, token, oid, w, acked, stop)) for w in range(2)]
    for t in threads:
        t.start()
    # kill in the middle of the burst
    assert wait_until(lambda: len(acked) >= 300 and any(k.startswith("ws") for k in acked), timeout=60, interval=0.005)
    node.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    n_acked = len(acked)
    assert n_acked < (WRITERS + 2) * MAX_PER_WRITER, "the kill came after the burst ended"
    assert any(k.startswith("ws") for k in acked) and any(k.startswith("w0-") for k in acked)
    node.start()
    data = node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"]
    missing = [k for k in acked if k not in data]
    assert not missing, f"{len(missing)} of {n_acked} acknowledged updates lost, e.g. {missing[:5]}"
    assert {k for k in acked if not k.startswith("ws")} <= set(data["log"])
    # the ledger's counts are durable with the updates they count
    led = node.req("GET", f"/api/contributions?object={oid}", user="alice").json()
    assert led["totals"]["edits"] >= n_acked + 1
