"""Memory of one node process: idle, then holding 1,000 objects.

Goal (issue 4): idle <= 40 MB RSS; with 1,000 objects <= 80 MB RSS.
Run: .venv/bin/python benchmarks/node_memory.py
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from node_common import ADMIN, make_nodes, write_result

OBJECTS = 1000

# RSS added by each import, in import order, measured in a fresh interpreter
IMPORT_PROBE = """
import json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
steps = [('python interpreter', None)] + [(m, m) for m in sys.argv[1:]]
out, prev = [], 0.0
for name, mod in steps:
    if mod:
        __import__(mod)
    now = rss()
    out.append((name, now - prev, now))
    prev = now
print(json.dumps(out))
"""
MODULES = [
    "asyncio",
    "sqlite3",
    "yaml",
    "prometheus_client",
    "pycrdt",
    "aiohttp.web",
    "nacl.signing",
    "p2pvalue_node.config",
    "p2pvalue_node.server",
]
# the import floor: the third-party modules the node cannot run without, no node code, in one fresh
# interpreter each; the second adds PyNaCl: every module the node imports from outside the standard library
FLOORS = [
    "aiohttp.web, pycrdt, prometheus_client, sqlite3, yaml",
    "aiohttp.web, pycrdt, prometheus_client, sqlite3, yaml, nacl.signing",
]
FLOOR_PROBE = """
import {}
for line in open('/proc/self/status'):
    if line.startswith('VmRSS:'):
        print(int(line.split()[1]) / 1024)
"""


def import_costs() -> list[tuple[str, float, float]]:
    import json
    import subprocess

    res = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *MODULES], capture_output=True, text=True, timeout=120, check=True
    )
    return [tuple(x) for x in json.loads(res.stdout)]  # type: ignore[misc]


def import_floors() -> list[tuple[str, float]]:
    import subprocess

    out = []
    for modules in FLOORS:
        res = subprocess.run(
            [sys.executable, "-c", FLOOR_PROBE.format(modules)], capture_output=True, text=True, timeout=120, check=True
        )
        out.append((modules, float(res.stdout.strip())))
    return out


def main() -> int:
    base, (node,) = make_nodes(1)
    try:
        node.start()
        time.sleep(2.0)
        idle_rss = node.rss_mb()
        idle_pss, idle_uss = node.pss_uss_mb()
        token = node.call("POST", "/api/admin/accounts", {"username": "alice"}, ADMIN)["token"]

        def one(i: int) -> None:
            oid = node.call("POST", "/api/objects", {}, token)["id"]
            node.call(
                "POST",
                f"/api/objects/{oid}/ops",
                {
                    "ops": [
                        {"op": "set", "key": "title", "value": f"object {i}"},
                        {"op": "set", "key": "body", "type": "text", "value": "some text " * 5},
                        {"op": "set", "key": "items", "type": "list", "value": [1, 2, 3]},
                    ]
                },
                token,
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(OBJECTS)))
        # every object read once: the node loads each document (then keeps at most
        # limits.max_loaded_documents of them in memory)
        objs = node.call("GET", "/api/objects", None, token)["objects"]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda o: node.call("GET", f"/api/objects/{o['id']}", None, token), objs))
        time.sleep(1.0)
        full_rss = node.rss_mb()
        full_pss, full_uss = node.pss_uss_mb()
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    ok_idle, ok_full = idle_rss <= 40, full_rss <= 80
    costs = import_costs()
    floors = import_floors()
    floor_rows = "\n".join(f"| `import {label}` | {rss:.1f} | {idle_rss - rss:+.1f} |" for label, rss in floors)
    table = "\n".join(f"| {name} | +{delta:.1f} | {total:.1f} |" for name, delta, total in costs)
    body = (
        "| state | RSS MB | PSS MB | USS MB | goal (RSS) | met |\n|---|---|---|---|---|---|\n"
        f"| idle | {idle_rss:.1f} | {idle_pss:.1f} | {idle_uss:.1f} | <= 40 | {'yes' if ok_idle else 'no'} |\n"
        f"| {OBJECTS} objects written and read | {full_rss:.1f} | {full_pss:.1f} | {full_uss:.1f} | <= 80 | "
        f"{'yes' if ok_full else 'no'} |\n\n"
        "One `p2pvalue-node serve` process with the default limits (256 documents kept loaded). "
        "RSS counts every touched page of the shared libraries (libpython, OpenSSL, libsodium, pycrdt's Rust "
        "extension, SQLite), PSS splits shared pages among processes, USS is private memory only. "
        f"Node modules are compiled from source at start when PYTHONDONTWRITEBYTECODE is set "
        f"(here: {'set' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'not set'}); a node installed by pip "
        "loads byte-compiled files, measured about 0.3 MB less.\n\n"
        "Import floor: RSS of a fresh interpreter that only imports the node's third-party modules (no node "
        "code), and how far the idle node is above it:\n\n"
        "| fresh interpreter | RSS MB | idle node minus floor |\n|---|---|---|\n" + floor_rows + "\n\n"
        "Where idle memory goes: RSS after each import in a fresh interpreter (MB), in this order (a module "
        "shared by two packages is counted on the first). `asyncio` pulls in `ssl` (OpenSSL); `aiohttp.web` "
        "includes aiohttp's client, which creates two TLS contexts at import (about 3 MB, loading the system "
        "CA store).\n\n"
        "| import | RSS added | RSS total |\n|---|---|---|\n" + table + "\n"
    )
    write_result("node_memory", "P2Pvalue node: memory", "python benchmarks/node_memory.py", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
