"""A federated pair of real nodes for node_ab.py, run by whatever p2pvalue_node is on the path.

Starts two nodes (image defaults, loopback), alice on A and bob on B, one object shared by both, waits
until B has it, prints one JSON line (URLs, tokens, object id) and keeps the nodes running until its
standard input is closed; then stops them and removes their directory.
Run: PYTHONPATH=<tree>/node_images/p2pvalue .venv/bin/python benchmarks/node_pair.py
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from node_common import ADMIN, make_nodes


def main() -> int:
    base, (a, b) = make_nodes(2)
    try:
        a.start()
        b.start()
        alice = a.call("POST", "/api/admin/accounts", {"username": "alice"}, ADMIN)["token"]
        bob = b.call("POST", "/api/admin/accounts", {"username": "bob"}, ADMIN)["token"]
        oid = a.call("POST", "/api/objects", {"participants": [f"bob@{b.domain}"]}, alice)["id"]
        deadline = time.monotonic() + 30
        while True:  # wait for the object to reach B
            try:
                b.call("GET", f"/api/objects/{oid}", None, bob)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
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
