"""Two nodes in one process (per-node metric registries), and the document/ledger building blocks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pycrdt
import pytest
from p2pvalue_node.config import load_config
from p2pvalue_node.documents import OpError, apply_ops, decode_state_vector, json_view, lacks, state_hash_of
from p2pvalue_node.server import start_node
from p2pvalue_node.testing import HOST, make_nodes


def test_two_nodes_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    specs = make_nodes(tmp_path, 2)

    async def run() -> list[str]:
        running = [await start_node(load_config(s.config_path)) for s in specs]
        try:
            node0 = running[0].node
            await node0.create_account("alice")
            meta = await node0.create_object("alice@" + node0.domain, False, [])
            await node0.apply_json_ops(meta, [{"op": "set", "key": "x", "value": 1}], "alice@" + node0.domain)
            texts = []
            async with aiohttp.ClientSession() as s:
                for spec in specs:
                    async with s.get(f"http://{HOST}:{spec.metrics_port}/metrics") as r:
                        texts.append(await r.text())
            return texts
        finally:
            for r in running:
                await r.stop()

    t0, t1 = asyncio.run(run())
    assert f'domain="{specs[0].domain}"' in t0 and f'domain="{specs[1].domain}"' not in t0
    assert f'domain="{specs[1].domain}"' in t1
    assert 'p2pvalue_updates_applied_total{origin="local"} 1.0' in t0
    assert "p2pvalue_objects 1.0" in t0 and "p2pvalue_objects 0.0" in t1


def test_ops_and_hash_are_replica_independent() -> None:
    a = pycrdt.Doc()
    apply_ops(
        a,
        [
            {"op": "set", "key": "t", "type": "text", "value": "ab"},
            {"op": "set", "key": "l", "type": "list", "value": [1]},
        ],
    )
    b = pycrdt.Doc()
    b.apply_update(a.get_update())
    # concurrent edits, exchanged in opposite orders
    ua_before, ub_before = a.get_state(), b.get_state()
    apply_ops(a, [{"op": "insert_text", "path": ["t"], "index": 0, "text": "X", "key": None}])
    apply_ops(b, [{"op": "append", "path": ["l"], "value": 2}])
    da, db = a.get_update(ua_before), b.get_update(ub_before)
    a.apply_update(db)
    b.apply_update(da)
    assert json_view(a) == json_view(b) == {"t": "Xab", "l": [1, 2]}
    assert json.dumps(json_view(a)["l"]) == "[1, 2]"
    assert state_hash_of(json_view(a)) == state_hash_of(json_view(b))
    with pytest.raises(OpError, match=r"ops\[0\]"):
        apply_ops(a, [{"op": "append", "path": ["t"], "value": 1}])


def test_state_vector_decoding() -> None:
    d = pycrdt.Doc()
    apply_ops(d, [{"op": "set", "key": "k", "value": 1}])
    sv = decode_state_vector(d.get_state())
    assert list(sv.values()) == [1]
    assert lacks(sv, {}) and not lacks({}, sv) and not lacks(sv, sv)
    assert decode_state_vector(b"\x00") == {}
    with pytest.raises(ValueError):
        decode_state_vector(b"\x02\x01")


def test_ledger_totals() -> None:
    from p2pvalue_node.ledger import Contribution, totals

    t = totals(
        [
            Contribution("a@x", "o1", 2, 10, 5, 9),
            Contribution("a@x", "o2", 1, 3, 1, 4),
            Contribution("b@y", "o1", 1, 1, 7, 7),
        ]
    )
    assert (t["contributors"], t["edits"], t["bytes"], t["objects"]) == (2, 4, 14, 2)
    assert t["per_contributor"][0] == {
        "contributor": "a@x",
        "edits": 3,
        "bytes": 13,
        "objects": 2,
        "first_ms": 1,
        "last_ms": 9,
    }


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    from p2pvalue_node.outbox import backoff_delay

    highs = [backoff_delay(n, 0.5, 60.0, 0.999999) for n in range(1, 12)]
    lows = [backoff_delay(n, 0.5, 60.0, 0.0) for n in range(1, 12)]
    assert [round(h, 3) for h in highs[:4]] == [0.5, 1.0, 2.0, 4.0]
    assert lows[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(highs) <= 60.0 and highs[-1] > 59.9 and lows[-1] == 30.0


def test_a_trusted_peer_costs_no_task_until_there_is_work_for_it(tmp_path: Path) -> None:
    """Issue 10, "Also": trusting more peers costs nothing while idle. Node 0 trusts 29 peers; only
    the one it shares an object with gets an anti-entropy task, and an outbox sender only while
    something waits for it."""
    specs = make_nodes(tmp_path, 30)

    def peer_tasks() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(("outbox:", "antientropy:"))}

    async def run() -> tuple[set[str], set[str], set[str], bool]:
        n0 = await start_node(load_config(specs[0].config_path))
        n1 = None
        try:
            idle = peer_tasks()
            await n0.node.create_account("alice")
            meta = await n0.node.create_object(f"alice@{specs[0].domain}", False, [f"bob@{specs[1].domain}"])
            await asyncio.sleep(0.2)  # the push to n1 fails (not started yet): its sender backs off
            sharing = peer_tasks()
            n1 = await start_node(load_config(specs[1].config_path))
            await n1.node.create_account("bob")
            for _ in range(100):  # the sender delivers after its backoff (at most 1 s here), then ends
                if f"outbox:{specs[1].domain}" not in peer_tasks():
                    break
                await asyncio.sleep(0.1)
            return idle, sharing, peer_tasks(), meta.id in n1.node.objects
        finally:
            await n0.stop()
            if n1 is not None:
                await n1.stop()

    idle, sharing, drained, delivered = asyncio.run(run())
    d1 = specs[1].domain
    assert idle == set()
    assert sharing == {f"outbox:{d1}", f"antientropy:{d1}"}
    assert delivered and f"outbox:{d1}" not in drained and f"antientropy:{d1}" in drained


def test_a_peer_loop_stops_when_cancelled_as_its_event_is_set() -> None:
    """The anti-entropy and outbox loops wait for an event with a timeout. Cancelled (a node's stop)
    just as the event is set, the loop must end: asyncio.wait_for on Python 3.11 returned normally
    there, the loop went on and the node's stop waited forever (seen once in CI)."""
    from p2pvalue_node.federation import wait_event

    async def run() -> tuple[bool, int]:
        event = asyncio.Event()
        rounds = 0

        async def loop() -> None:
            nonlocal rounds
            while True:
                await wait_event(event, 30.0)
                event.clear()
                rounds += 1

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.01)
        event.set()
        await asyncio.sleep(0)  # the inner wait completes first, then the stop arrives
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
        return bool(done) and task.cancelled(), rounds

    ended, rounds = asyncio.run(run())
    assert ended, "the loop went on after it was cancelled"
    assert rounds == 0
    assert asyncio.run(_wait_event_times_out()) is False


async def _wait_event_times_out() -> bool:
    from p2pvalue_node.federation import wait_event

    return await wait_event(asyncio.Event(), 0.01)
