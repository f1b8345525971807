"""Bring-up and tear-down of large emulated testbeds; memory of the wire processes.

    sudo .venv/bin/python benchmarks/testbed_scale.py [--shaper wire] [--grid 500] [--runs 1]

Brings up the FFWien import (experiments/topologies/ffwien.yaml: 246 devices, 395 links) and a
~500-device grid, checks a few end-to-end pings, measures `up` and `down` wall time, the per-phase
timings, the wire processes' resident memory, and writes benchmarks/results/testbed_scale.md.
Goals (issue 3): FFWien up <= 20 s, down <= 10 s; 500-device grid up <= 60 s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_machine import describe  # noqa: E402

from toolkit.testbed import naming  # noqa: E402
from toolkit.testbed.testbed import Testbed  # noqa: E402
from toolkit.topology.loader import load_topology  # noqa: E402
from toolkit.topology.model import Device, Direction, Link, Topology  # noqa: E402
from toolkit.topology.presets import PROFILES  # noqa: E402
from toolkit.wire.control import WireClient  # noqa: E402


def grid(n_devices: int) -> Topology:
    side = round(n_devices**0.5)
    rows = (n_devices + side - 1) // side
    g = nx.grid_2d_graph(rows, side)
    nodes = sorted(g)[:n_devices]
    g = g.subgraph(nodes)
    name = {v: f"g{v[0]}x{v[1]}" for v in nodes}
    d = Direction(delay_ms=2, jitter_ms=0, loss_pct=0, rate_kbit=50_000)
    return Topology(
        f"grid-{n_devices}",
        {name[v]: Device(name[v], PROFILES["vct"]) for v in nodes},
        tuple(Link(name[a], name[b], d, d) for a, b in sorted(g.edges)),
    )


def mem_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS splits shared pages (the Python interpreter) fairly."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def measure(topo: Topology, shaper: str) -> dict:
    tid = naming.random_id()
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    tb = Testbed.up(topo, tid, shaper=shaper)
    up_s = time.monotonic() - t0
    try:
        names = list(tb.plan.devices)
        pairs = [(names[0], names[-1]), (names[len(names) // 2], names[1])]
        pings = []
        for a, b in pairs:
            r = tb.exec(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", b])
            pings.append(
                f"{a}->{b}: {'ok' if r.returncode == 0 else 'FAILED'} {(r.stdout.strip().splitlines() or [''])[-1]}"
            )
        wire_pids = [int(r["name"]) for r in tb.state.resources() if r["kind"] == "process"]
        mem = [mem_kib(pid) for pid in wire_pids]
        ring_bytes = sum(WireClient(shard.control_path).stats()["ring_bytes"] for shard in tb.plan.wire_shards)
        meta = tb.state.meta
    finally:
        t1 = time.monotonic()
        Testbed.down_id(tid)
        down_s = time.monotonic() - t1
    return {
        "topology": topo.name,
        "devices": len(topo.devices),
        "links": len(topo.links),
        "shaper": shaper,
        "up_s": round(up_s, 2),
        "down_s": round(down_s, 2),
        "phases": meta.get("timings"),
        "wire_mem_kib": mem,
        "ring_mib": ring_bytes / 2**20,
        "pings": pings,
        "load1": load,
        "routes": sum(len(d.routes) + len(d.routes6) for d in tb.plan.devices.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shaper", default="wire")
    ap.add_argument("--grid", type=int, default=500)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "testbed_scale.md"))
    args = ap.parse_args()
    ffwien = load_topology(REPO / "experiments" / "topologies" / "ffwien.yaml")
    results = []
    for _ in range(args.runs):
        for topo in (ffwien, grid(args.grid)):
            res = measure(topo, args.shaper)
            print(json.dumps(res), flush=True)
            results.append(res)
    lines = [
        "# Testbed bring-up and tear-down at scale",
        "",
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {describe()}.",
        f"Command: `sudo .venv/bin/python benchmarks/testbed_scale.py --shaper {args.shaper} "
        f"--grid {args.grid} --runs {args.runs}`",
        "",
        "Goals (issue 3): FFWien up <= 20 s, down <= 10 s; 500-device grid up <= 60 s.",
        "",
        "The machine is shared with other engineers' test runs: `load` is the 1-minute load average when",
        "the run started (2 cores), and explains most of the spread between runs.",
        "",
        "| topology | devices | links | static routes | shaper | load | up s | down s | wire processes | "
        "wire RSS MiB (sum) | wire PSS MiB (sum) | receive rings MiB (kernel) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mem = r["wire_mem_kib"]
        rss, pss = sum(m[0] for m in mem) / 1024, sum(m[1] for m in mem) / 1024
        lines.append(
            f"| {r['topology']} | {r['devices']} | {r['links']} | {r['routes']} | {r['shaper']} "
            f"| {r['load1']:.1f} | {r['up_s']} | {r['down_s']} | {len(mem)} | {rss:.0f} | {pss:.0f} "
            f"| {r['ring_mib']:.0f} |"
        )
    lines += ["", "Per-phase seconds of `up`:", ""]
    for r in results:
        lines.append(f"- {r['topology']}: " + ", ".join(f"{k} {v}" for k, v in (r["phases"] or {}).items()))
    lines += ["", "End-to-end checks after bring-up (ping across the mesh):", ""]
    for r in results:
        lines += [f"- {r['topology']}: {p}" for p in r["pings"]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
