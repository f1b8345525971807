"""Issue 10, high 7 and medium 13: what answers at a peer's address is read within a bound, and only a
signed answer from the peer itself can make a node drop outbox entries.

A real node process talks to a real HTTP server in the test process that sits at its peer's address.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from p2pvalue_node.testing import HOST

HUGE = 64 << 20  # what the impostor tries to send


async def _metric(s: aiohttp.ClientSession, port: int, name: str) -> float:
    async with s.get(f"http://{HOST}:{port}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _impostor(port: int, handler: Any) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/federation/v1/push", handler)
    app.router.add_post("/federation/v1/sync", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


def _setup(nodes_factory: Any, **settings: Any) -> tuple[Any, Any, str]:
    n0, n1 = nodes_factory(2, start=False, **settings)
    n0.start()
    n0.add_user("alice")
    oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
    return n0, n1, oid


def test_a_huge_peer_response_is_not_read_whole(nodes_factory: Any) -> None:
    n0, n1, oid = _setup(nodes_factory, federation={"max_response_bytes": 1 << 20})
    sent: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b" " * (1 << 20)
        total = 0
        try:
            while total < HUGE:
                await resp.write(chunk)
                total += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        sent.append(total)
        return resp

    async def run() -> tuple[float, float]:
        runner = await _impostor(n1.fed_port, handler)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"http://{HOST}:{n0.client_port}/api/objects/{oid}/ops",
                    headers={"Authorization": f"Bearer {n0.tokens['alice']}"},
                    json={"ops": [{"op": "set", "key": "x", "value": 1}]},
                ) as r:
                    assert r.status == 200
                for _ in range(600):
                    if len(sent) >= 2:
                        break
                    await asyncio.sleep(0.1)
                return (
                    await _metric(s, n0.metrics_port, "p2pvalue_federation_send_failures_total"),
                    await _metric(s, n0.metrics_port, "p2pvalue_outbox_depth"),
                )
        finally:
            await runner.cleanup()

    failures, depth = asyncio.run(run())
    assert len(sent) >= 2, "the node did not retry"
    # the node stopped reading after ~1 MiB: what got out of the impostor is that plus socket buffers
    assert max(sent) < 24 << 20, sent
    assert failures >= 1 and depth >= 1  # a failed exchange; the update is still waiting to go out
    assert n0.proc is not None and n0.proc.poll() is None


def test_unsigned_errors_do_not_drop_outbox_entries(nodes_factory: Any) -> None:
    """A peer address that points at something else (here a plain server answering 422, like a client
    port) must not make the node drop what it has to deliver."""
    n0, n1, oid = _setup(nodes_factory)
    calls: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        calls.append(1)
        return web.json_response({"error": "body: unknown field", "status": 422}, status=422)

    async def run() -> float:
        runner = await _impostor(n1.fed_port, handler)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"http://{HOST}:{n0.client_port}/api/objects/{oid}/ops",
                    headers={"Authorization": f"Bearer {n0.tokens['alice']}"},
                    json={"ops": [{"op": "set", "key": "x", "value": 1}]},
                ) as r:
                    assert r.status == 200
                for _ in range(600):
                    if len(calls) >= 4:
                        break
                    await asyncio.sleep(0.1)
                return await _metric(s, n0.metrics_port, "p2pvalue_outbox_depth")
        finally:
            await runner.cleanup()

    depth = asyncio.run(run())
    assert len(calls) >= 4
    assert depth >= 1, "an unsigned 422 made the node drop its outbox entries"
    # once the real peer is there, the entries are delivered
    n1.start()
    n1.add_user("bob")
    from p2pvalue_node.testing import wait_until

    assert wait_until(
        lambda: (
            n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200
            and n1.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": 1}
        )
    )
