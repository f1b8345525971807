"""Issue 10, high 6: a WebSocket subscriber that does not read is closed once its queue passes a
byte bound, without blocking the node (real node process, real aiohttp client that stops reading)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from p2pvalue_node.testing import HOST, request

UPDATES = 150
VALUE = "v" * (100 << 10)  # 100 KiB per update: 15 MB in all, far past the 1 MiB queue and the socket buffers


def test_slow_subscriber_is_closed_not_buffered(nodes_factory: Any) -> None:
    (n,) = nodes_factory(1, limits={"max_websocket_queue_bytes": 1 << 20, "max_body_bytes": 1 << 20})
    n.add_user("alice")
    oid = n.req("POST", "/api/objects", {}, user="alice").json()["id"]

    async def run() -> tuple[int, Any, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(
                f"http://{HOST}:{n.client_port}/api/ws", headers={"Authorization": f"Bearer {n.tokens['alice']}"}
            ) as ws:
                await ws.send_json({"type": "subscribe", "object": oid})
                assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
                # stop reading; write a lot through another connection (these are answered: nothing blocks)
                for i in range(UPDATES):
                    r = await s.post(
                        f"http://{HOST}:{n.client_port}/api/objects/{oid}/ops",
                        headers={"Authorization": f"Bearer {n.tokens['alice']}"},
                        json={"ops": [{"op": "set", "key": f"k{i % 4}", "value": VALUE}]},
                    )
                    assert r.status == 200, await r.text()
                # read again: what was in the socket buffers arrives, then the connection ends
                updates = 0
                while True:
                    try:
                        msg = await ws.receive(timeout=15)
                    except TimeoutError:
                        return updates, "still open", None
                    if msg.type == WSMsgType.TEXT:
                        updates += 1
                        continue
                    return updates, msg.type, ws.close_code

    updates, how, code = asyncio.run(run())
    assert how != "still open", f"the slow subscriber was never closed ({updates} updates delivered)"
    assert updates < UPDATES
    assert how in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
    if how == WSMsgType.CLOSE:
        assert code == 1008
    metrics = request(n.metrics_port, "GET", "/metrics").body.decode()
    assert "p2pvalue_websocket_dropped_total 1.0" in metrics
    assert n.req("GET", "/health").status == 200
