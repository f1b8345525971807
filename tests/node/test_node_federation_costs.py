"""Issue 10, "Also": idle peers cost nothing, peer connections stay warm, a node stops promptly."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from typing import Any

from p2pvalue_node.testing import HOST, LocalNode, request, wait_until


def _metric(node: LocalNode, name: str, labels: str = "") -> float:
    text = request(node.metrics_port, "GET", "/metrics").body.decode()
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    return 0.0


SYNCS = ("p2pvalue_federation_requests_received_total", 'path="/federation/v1/sync"')


def test_peers_that_share_nothing_cost_nothing(nodes_factory: Any) -> None:
    n0, n1, n2 = nodes_factory(3, federation={"antientropy_interval_s": 0.5})
    n0.add_user("alice")
    n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
    # n0 and n1 share an object: they run rounds (several, at the short interval)
    assert wait_until(lambda: _metric(n1, *SYNCS) >= 4, timeout=60)
    # n2 trusts both and is trusted by both, but shares nothing: no round reaches it, it runs none
    assert _metric(n2, *SYNCS) == 0
    assert _metric(n2, "p2pvalue_antientropy_rounds_total", 'result="ok"') == 0
    assert _metric(n2, "p2pvalue_antientropy_rounds_total", 'result="failed"') == 0
    assert n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200


def test_peer_connections_stay_warm_across_a_pause(nodes_factory: Any) -> None:
    """aiohttp's client drops idle connections after 15 s; the node keeps them longer than its
    anti-entropy interval, so an edit after a pause reuses the connection."""
    n0, n1 = nodes_factory(2, federation={"antientropy_interval_s": 60.0})
    n0.add_user("alice")
    n1.add_user("bob")
    oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]

    def edit(value: int) -> None:
        assert (
            n0.req(
                "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "v", "value": value}]}, user="alice"
            ).status
            == 200
        )
        assert wait_until(
            lambda: (
                n1.req("GET", f"/api/objects/{oid}", user="bob").status == 200
                and n1.req("GET", f"/api/objects/{oid}", user="bob").json()["data"].get("v") == value
            )
        )

    edit(1)
    time.sleep(6)  # past the first (randomly placed) anti-entropy round
    edit(2)
    accepted = _metric(n1, "p2pvalue_connections_accepted_total", 'listener="federation"')
    assert accepted >= 1
    time.sleep(17)  # idle longer than aiohttp's default keep-alive
    edit(3)
    assert _metric(n1, "p2pvalue_connections_accepted_total", 'listener="federation"') == accepted


def test_sigterm_stops_the_node_whatever_is_in_flight(nodes_factory: Any) -> None:
    """A held request, an open WebSocket and pushes hanging on a peer that never answers do not keep
    the node from stopping cleanly: it exits 0 after its own shutdown path (no traceback, no kill),
    the in-flight pushes stay in the durable outbox, and the next start (data dir lock released) has
    every acknowledged edit. The wait is only a hang detector, far above the 5 s budget the node keeps
    (timing goals belong to benchmarks)."""
    black_hole = socket.socket()
    black_hole.bind((HOST, 0))
    black_hole.listen(64)  # accepts (the kernel does) and never answers
    try:
        n0, n1 = nodes_factory(2, start=False, federation={"request_timeout_s": 60.0, "antientropy_interval_s": 60.0})
        text = n0.config_path.read_text().replace(n1.fed_address, f"http://{HOST}:{black_hole.getsockname()[1]}")
        n0.config_path.write_text(text)
        n0.start()
        n0.add_user("alice")
        oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
        for i in range(20):
            ops = {"ops": [{"op": "set", "key": "v", "value": i}]}
            assert n0.req("POST", f"/api/objects/{oid}/ops", ops, user="alice").status == 200
        # a request whose body never completes
        held = socket.create_connection((HOST, n0.client_port))
        held.sendall(
            f"POST /api/objects/{oid}/ops HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{n0.tokens['alice']}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        # an open WebSocket that never answers a close
        ws = socket.create_connection((HOST, n0.client_port))
        ws.sendall(
            f"GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {n0.tokens['alice']}\r\n\r\n".encode()
        )
        assert b"101" in ws.recv(200)
        assert n0.proc is not None
        proc = n0.proc
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)  # hang detector only
        except subprocess.TimeoutExpired:
            raise AssertionError("the node hung after SIGTERM") from None
        assert rc == 0, f"exit status {rc}: not the node's own clean stop"
        log_text = (n0.dir / "node.log").read_text()
        assert "Traceback" not in log_text, log_text[-2000:]
        # the server side of both held connections is gone
        for sock in (held, ws):
            sock.settimeout(10)
            while True:
                try:
                    if not sock.recv(65536):
                        break
                except ConnectionResetError:
                    break
            sock.close()
        n0.proc = None
        # the outbox is durable: the entries are still there for the next start
        import sqlite3

        db = sqlite3.connect(n0.dir / "data" / "node.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] >= 1
        db.close()
        # and the next start works (the data dir lock was released) with every acknowledged edit
        n0.start()
        assert n0.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {"v": 19}
    finally:
        black_hole.close()
