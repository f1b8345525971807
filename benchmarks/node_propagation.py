"""Propagation of an update between two federated nodes on loopback.

Goal (issue 4): p50 <= 5 ms, p99 <= 20 ms.
Measured end to end: from the moment a client sends a small update to node A until a WebSocket
subscriber on node B receives it. That path holds A's durable commit, the signed push through A's
outbox, B's signature check, B's commit (B shows the update once it is written, before the fsync; it
answers the push after the fsync) and B's fan-out. Updates are sent one at a time, spaced by --gap-ms,
so the figure is latency, not queueing.
Run: .venv/bin/python benchmarks/node_propagation.py [--count 500] [--gap-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sys
import time
import urllib.request

import aiohttp
import pycrdt
from node_common import make_nodes, percentile, shared_pair, write_result


async def measure(
    a_url: str, b_url: str, alice: str, bob: str, oid: str, count: int, gap_s: float
) -> tuple[list[float], list[float]]:
    sent: dict[int, float] = {}
    delays: list[float] = []
    acks: list[float] = []
    replica = pycrdt.Doc()
    root = replica.get("root", type=pycrdt.Map)
    done = asyncio.Event()

    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{b_url}/api/ws", headers={"Authorization": f"Bearer {bob}"}) as ws:
            await ws.send_json({"type": "subscribe", "object": oid})
            first = await ws.receive_json()
            replica.apply_update(base64.b64decode(first["state"]))

            async def reader() -> None:
                async for msg in ws:
                    now = time.perf_counter()
                    data = msg.json()
                    if data.get("type") != "update":
                        continue
                    replica.apply_update(base64.b64decode(data["update"]))
                    seq = root.get("seq")
                    if seq is not None and int(seq) in sent and len(delays) < count:
                        delays.append(now - sent.pop(int(seq)))
                        if len(delays) >= count:
                            done.set()
                            return

            task = asyncio.create_task(reader())
            headers = {"Authorization": f"Bearer {alice}"}
            for i in range(count):
                t0 = time.perf_counter()
                sent[i] = t0
                async with s.post(
                    f"{a_url}/api/objects/{oid}/ops",
                    headers=headers,
                    json={"ops": [{"op": "set", "key": "seq", "value": i}]},
                ) as r:
                    await r.read()
                    assert r.status == 200, r.status
                acks.append(time.perf_counter() - t0)
                await asyncio.sleep(gap_s)
            try:
                await asyncio.wait_for(done.wait(), timeout=30)
            finally:
                task.cancel()
    return delays, acks


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--gap-ms", type=float, default=10.0)
    ap.add_argument(
        "--json", action="store_true", help="print the figures as one JSON line instead of recording a results section"
    )
    args = ap.parse_args()
    base, (a, b) = make_nodes(2)
    try:
        a.start()
        b.start()
        alice, bob, oid = shared_pair(a, b)
        asyncio.run(measure(a.url, b.url, alice, bob, oid, 50, args.gap_ms / 1000))  # warm-up
        delays, acks = asyncio.run(measure(a.url, b.url, alice, bob, oid, args.count, args.gap_ms / 1000))
        with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics") as r:
            text = r.read().decode()
        node_side = [line for line in text.splitlines() if line.startswith("p2pvalue_propagation_delay_seconds_")]
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(base, ignore_errors=True)
    p50, p99 = percentile(delays, 50) * 1000, percentile(delays, 99) * 1000
    if args.json:
        figures = {"n": len(delays), "p50_ms": p50, "p90_ms": percentile(delays, 90) * 1000, "p99_ms": p99}
        print(json.dumps({**figures, "ack_p50_ms": percentile(acks, 50) * 1000}))
        return 0
    met = p50 <= 5 and p99 <= 20
    body = (
        "| measured | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n"
        f"| A client send -> B WebSocket receive | {len(delays)} | {p50:.2f} | {percentile(delays, 90) * 1000:.2f} | "
        f"{p99:.2f} | {max(delays) * 1000:.2f} |\n"
        f"| A acknowledgement (durable on A) | {len(acks)} | {percentile(acks, 50) * 1000:.2f} | "
        f"{percentile(acks, 90) * 1000:.2f} | {percentile(acks, 99) * 1000:.2f} | {max(acks) * 1000:.2f} |\n\n"
        f"Goal: p50 <= 5 ms and p99 <= 20 ms: {'met' if met else 'NOT met'}.\n\n"
        "Node B's own histogram `p2pvalue_propagation_delay_seconds` (origin timestamp, ms resolution, to durable "
        "on B), cumulative buckets:\n\n```\n" + "\n".join(node_side) + "\n```\n"
    )
    cmd = f"python benchmarks/node_propagation.py --count {args.count} --gap-ms {args.gap_ms:g}"
    write_result("node_propagation", "P2Pvalue node: propagation between two nodes on loopback", cmd, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
