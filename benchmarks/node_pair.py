"""Real nodes for node_ab.py, run by whatever p2pvalue_node is on the path.

Default: a federated pair (image defaults, loopback), alice on A and bob on B, one object shared by
both; waits until B has it. With --objects N: one node, alice and N objects holding a list "log" (the
throughput load's objects). Prints one JSON line (URLs, tokens, object ids) and keeps the nodes running
until its standard input is closed; then stops them and removes their directory.
Run: PYTHONPATH=<tree>/node_images/p2pvalue .venv/bin/python benchmarks/node_pair.py [--objects 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from node_common import ADMIN, make_nodes, shared_pair


def single(objects: int) -> int:
    base, (node,) = make_nodes(1)
    try:
        node.start()
        token = node.call("POST", "/api/admin/accounts", {"username": "alice"}, ADMIN)["token"]
        oids = []
        for _ in range(objects):
            oid = node.call("POST", "/api/objects", {}, token)["id"]
            node.call("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "log", "type": "list"}]}, token)
            oids.append(oid)
        pids = [node.proc.pid] if node.proc is not None else []
        print(json.dumps({"url": node.url, "token": token, "oids": oids, "pids": pids}))
        sys.stdout.flush()
        sys.stdin.read()  # until the caller closes it
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=0, help="one node with this many objects instead of a pair")
    args = ap.parse_args()
    if args.objects:
        return single(args.objects)
    base, (a, b) = make_nodes(2)
    try:
        a.start()
        b.start()
        alice, bob, oid = shared_pair(a, b)
        pids = [n.proc.pid for n in (a, b) if n.proc is not None]
        print(json.dumps({"a_url": a.url, "b_url": b.url, "alice": alice, "bob": bob, "oid": oid, "pids": pids}))
        sys.stdout.flush()
        sys.stdin.read()  # until the caller closes it
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
