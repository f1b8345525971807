"""Three real node processes on 127.0.0.1 federating one shared object."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from p2pvalue_node.testing import LocalNode, request, wait_until


def _hashes(nodes: list[tuple[LocalNode, str]], oid: str) -> list[str | None]:
    out: list[str | None] = []
    for n, user in nodes:
        r = n.req("GET", f"/api/objects/{oid}", user=user)
        out.append(r.json()["state_hash"] if r.status == 200 else None)
    return out


def _data(n: LocalNode, user: str, oid: str) -> Any:
    return n.req("GET", f"/api/objects/{oid}", user=user).json()["data"]


def _metric(n: LocalNode, name: str) -> float:
    for line in request(n.metrics_port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _edit_concurrently(writers: list[tuple[LocalNode, str]], oid: str, rounds: int, tag: str) -> None:
    errors: list[Any] = []

    def work(n: LocalNode, user: str) -> None:
        for i in range(rounds):
            r = n.req(
                "POST",
                f"/api/objects/{oid}/ops",
                {
                    "ops": [
                        {"op": "append", "path": ["log"], "value": f"{tag}-{user}-{i}"},
                        {"op": "insert_text", "path": ["text"], "index": 0, "text": user[0]},
                        {"op": "set", "key": f"last-{user}", "value": i},
                    ]
                },
                user=user,
            )
            if r.status != 200:
                errors.append(r.body)

    threads = [threading.Thread(target=work, args=w) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]


def test_three_nodes_converge_and_catch_up(nodes_factory: Any) -> None:
    n0, n1, n2 = nodes_factory(3)
    alice, bob, carol = n0.add_user("alice"), n1.add_user("bob"), n2.add_user("carol")
    all3 = [(n0, "alice"), (n1, "bob"), (n2, "carol")]
    obj = n0.req("POST", "/api/objects", {"participants": [bob, carol]}, user="alice").json()
    oid = obj["id"]
    r = n0.req(
        "POST",
        f"/api/objects/{oid}/ops",
        {"ops": [{"op": "set", "key": "log", "type": "list"}, {"op": "set", "key": "text", "type": "text"}]},
        user="alice",
    )
    assert r.status == 200
    # the object reaches the other servers with its structure
    assert wait_until(lambda: all(h == _hashes(all3, oid)[0] for h in _hashes(all3, oid)))
    assert _data(n2, "carol", oid) == {"log": [], "text": ""}
    # participants on other servers can read it there; others there cannot
    assert n1.req("GET", f"/api/objects/{oid}", user="bob").json()["participants"] == [alice, bob, carol]

    # concurrent edits on all three converge to one state
    _edit_concurrently(all3, oid, 25, "a")
    assert wait_until(lambda: len(set(_hashes(all3, oid))) == 1), [len(_data(n, u, oid)["log"]) for n, u in all3]
    data = _data(n1, "bob", oid)
    assert len(data["log"]) == 75 and len(data["text"]) == 75
    assert {e for e in data["log"]} == {f"a-{u}-{i}" for _, u in all3 for i in range(25)}
    assert _metric(n1, "p2pvalue_propagation_delay_seconds_count") > 0
    # every pushed update arrives (some state may have come earlier through an anti-entropy round)
    assert wait_until(lambda: _metric(n0, 'p2pvalue_updates_applied_total{origin="remote"}') >= 50)

    # n2 goes down hard (SIGKILL); editing goes on; it comes back and catches up with nothing lost
    n2.kill()
    _edit_concurrently([(n0, "alice"), (n1, "bob")], oid, 20, "b")
    assert wait_until(
        lambda: _metric(n0, "p2pvalue_outbox_depth") > 0 and _metric(n0, "p2pvalue_peers_reachable") == 1
    ), (_metric(n0, "p2pvalue_outbox_depth"), _metric(n0, "p2pvalue_peers_reachable"))
    n2.start()
    assert wait_until(lambda: len(set(_hashes(all3, oid))) == 1), [len(_data(n, u, oid)["log"]) for n, u in all3]
    final = _data(n2, "carol", oid)
    assert len(final["log"]) == 115
    assert {f"b-{u}-{i}" for u in ("alice", "bob") for i in range(20)} <= set(final["log"])
    assert wait_until(lambda: _metric(n0, "p2pvalue_outbox_depth") == 0 and _metric(n1, "p2pvalue_outbox_depth") == 0)
    assert wait_until(lambda: _metric(n0, "p2pvalue_peers_reachable") == 2)
    # the ledger on n2 counts the edits of remote contributors that reached it by push
    led = n2.req("GET", f"/api/contributions?object={oid}", user="carol").json()
    assert {r["contributor"] for r in led["contributions"]} == {alice, bob, carol}


def test_anti_entropy_repairs_a_lost_outbox(nodes_factory: Any) -> None:
    n0, n1 = nodes_factory(2)
    n0.add_user("alice")
    bob = n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {"participants": [bob]}, user="alice").json()["id"]
    assert wait_until(lambda: n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200)
    n1.stop()
    for i in range(10):
        assert (
            n0.req(
                "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": f"k{i}", "value": i}]}, user="alice"
            ).status
            == 200
        )
    # throw away every outbox entry: only anti-entropy can bring these edits to n1 now
    with sqlite3.connect(n0.dir / "data" / "node.sqlite3", timeout=30) as db:
        db.execute("DELETE FROM outbox")
    n1.start()
    expected = {f"k{i}": i for i in range(10)}
    assert wait_until(lambda: n1.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == expected)
    # the document shows a repair as soon as it is applied in memory; the counter moves once the repair
    # is durable (after the commit's fsync), so on a busy machine it can lag the GET above: poll it too
    assert wait_until(lambda: _metric(n1, "p2pvalue_antientropy_updates_repaired_total") >= 1)
    assert wait_until(lambda: _metric(n1, 'p2pvalue_antientropy_rounds_total{result="ok"}') >= 1)
    # and the other way: edits on n1 made while n0 is down and its outbox is lost reach n0
    n0.stop()
    assert (
        n1.req(
            "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "from-bob", "value": 1}]}, user="bob"
        ).status
        == 200
    )
    with sqlite3.connect(n1.dir / "data" / "node.sqlite3", timeout=30) as db:
        db.execute("DELETE FROM outbox")
    n0.start()
    assert wait_until(lambda: n0.req("GET", f"/api/objects/{oid}", user="alice").json()["data"].get("from-bob") == 1)


def test_adding_a_remote_participant_later_sends_the_whole_object(nodes_factory: Any) -> None:
    n0, n1 = nodes_factory(2)
    n0.add_user("alice")
    bob = n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {}, user="alice").json()["id"]
    for i in range(5):
        n0.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": f"k{i}", "value": i}]}, user="alice")
    assert n1.req("GET", f"/api/objects/{oid}", user="bob").status == 404
    r = n0.req("PATCH", f"/api/objects/{oid}", {"add": [bob]}, user="alice")
    assert r.status == 200
    expected = {f"k{i}": i for i in range(5)}
    assert wait_until(lambda: n1.req("GET", f"/api/objects/{oid}", user="bob").json().get("data") == expected)
    # bob's edit on his server reaches alice's
    assert (
        n1.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "bob", "value": 1}]}, user="bob").status
        == 200
    )
    assert wait_until(lambda: n0.req("GET", f"/api/objects/{oid}", user="alice").json()["data"].get("bob") == 1)
    # removing bob: the creator's node sends the new list and bob loses access on his own server
    assert n0.req("PATCH", f"/api/objects/{oid}", {"remove": [bob]}, user="alice").status == 200
    assert wait_until(lambda: n1.req("GET", f"/api/objects/{oid}", user="bob").status == 404)


def test_outbox_backlog_larger_than_the_peer_body_limit_is_split(nodes_factory: Any) -> None:
    n0, n1 = nodes_factory(2, limits={"max_body_bytes": 4096})
    n0.add_user("alice")
    bob = n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {"participants": [bob]}, user="alice").json()["id"]
    assert wait_until(lambda: n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200)
    n1.stop()
    for i in range(40):  # about 40 x 300 bytes waiting for n1: more than one 4 KiB push
        assert (
            n0.req(
                "POST",
                f"/api/objects/{oid}/ops",
                {"ops": [{"op": "set", "key": f"k{i}", "value": "x" * 150}]},
                user="alice",
            ).status
            == 200
        )
    n1.start()
    assert wait_until(lambda: _metric(n0, "p2pvalue_outbox_depth") == 0)
    # every queued update arrived as its own pushed update (none was dropped as too large)
    assert wait_until(lambda: _metric(n1, 'p2pvalue_updates_applied_total{origin="remote"}') >= 40)
    assert len(n1.req("GET", f"/api/objects/{oid}", user="bob").json()["data"]) == 40
