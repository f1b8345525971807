"""Deploying P2Pvalue federations onto large emulated testbeds: time to healthy, memory, idle CPU.

    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/deploy_scale.py [--idle-s 60]
        [--grid 1000] [--nodes-per-process 125] [--skip-naive] [--skip-dense]

1. FFWien (experiments/topologies/ffwien.yaml: the NetJSON import, 246 devices, profile vct), the
   fork launcher, one row per --trust mode (all: the goal's setting; none: the deployer alone,
   without anti-entropy between peers): `deploy()` until every node is healthy; PSS per node; CPU
   of the nodes, the launcher and the wire over an idle window (% of one core).
2. The naive baseline in the same run: one `p2pvalue-node serve` process per device, started
   through the network-namespace target (`ip netns exec`, the device's cgroup), same configs.
3. A grid of --grid devices in dense mode (--nodes-per-process), each grid row a site, trust
   --grid-trust: time to healthy and the nodes' total PSS.

Goals (issue 9): FFWien healthy <= 10 s, PSS <= 12 MB per node, idle nodes + wire <= 25 % of a core
over 60 s; 1,000-device grid in dense mode healthy <= 60 s, nodes' memory <= 3 GB.
Writes benchmarks/results/deploy_scale.md (newest run first).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_machine import describe  # noqa: E402

from toolkit.deploy import probe as probing  # noqa: E402
from toolkit.deploy.deployment import Deployment  # noqa: E402
from toolkit.deploy.direct import deploy, plan_for, write_node_files  # noqa: E402
from toolkit.targets import LocalTarget, NetnsTarget  # noqa: E402
from toolkit.testbed import naming  # noqa: E402
from toolkit.testbed.executor import process_record  # noqa: E402
from toolkit.testbed.testbed import Testbed  # noqa: E402
from toolkit.topology.loader import load_topology  # noqa: E402
from toolkit.topology.model import Device, Direction, Federation, Link, Topology  # noqa: E402
from toolkit.topology.presets import PROFILES  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def grid(n_devices: int) -> Topology:
    """A square-ish grid; each row a site."""
    side = round(n_devices**0.5)
    rows = (n_devices + side - 1) // side
    g = nx.grid_2d_graph(rows, side)
    nodes = sorted(g)[:n_devices]
    g = g.subgraph(nodes)
    name = {v: f"g{v[0]}x{v[1]}" for v in nodes}
    d = Direction(delay_ms=2, rate_kbit=50_000)
    sites = tuple(sorted({f"r{v[0]}" for v in nodes}))
    return Topology(
        f"grid-{n_devices}",
        {name[v]: Device(name[v], PROFILES["vct"], site=f"r{v[0]}") for v in nodes},
        tuple(Link(name[a], name[b], d, d) for a, b in sorted(g.edges)),
        sites=sites,
    )


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
        except OSError:
            pass
    return total / TICK


def idle_cpu(groups: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """% of one core per group of processes over `seconds`."""
    before = {k: cpu_s(v) for k, v in groups.items()}
    time.sleep(seconds)
    return {k: round(100 * (cpu_s(v) - before[k]) / seconds, 1) for k, v in groups.items()}


def wire_pids(tb: Testbed) -> list[int]:
    return [
        int(r["name"])
        for r in tb.state.resources()
        if r["kind"] == "process" and str(r.get("role", "")).startswith("wire")
    ]


def federation(topo: Topology, trust: str) -> Federation:
    return Federation("p2pvalue", tuple(topo.devices), trust=trust, domain_suffix=topo.name)  # type: ignore[arg-type]


def fork_run(topo: Topology, idle_s: float, trust: str) -> dict:
    tb = Testbed.up(topo, naming.random_id())
    out: dict = {
        "topology": topo.name,
        "devices": len(topo.devices),
        "mode": "fork launcher",
        "trust": trust,
        "load1": os.getloadavg()[0],
    }
    try:
        t0 = time.monotonic()
        dep = deploy(tb, federation=federation(topo, trust), timeout_s=300)
        out["healthy_s"] = round(time.monotonic() - t0, 2)
        out["pairs"] = dep.plan.trust_pairs()
        out["phases"] = tb.state.meta["deploy"].get("timings")
        procs = dep.processes() or {}
        pids = [p.pid for p in procs.values() if p.pid]
        launcher = tb.state.meta["deploy"]["launcher_pid"]
        out["pss_per_node_mb"] = round(sum(pss_kib(p) for p in pids) / len(pids) / 1024, 1)
        out["launcher_pss_mb"] = round(pss_kib(launcher) / 1024, 1)
        out["idle"] = idle_cpu({"nodes": pids + [launcher], "wire": wire_pids(tb)}, idle_s)
        st = dep.status()
        out["started"] = sum(1 for s in st if s.state == "started")
        out["peers_reachable_mean"] = round(sum(s.peers_reachable or 0 for s in st) / len(st), 1)
    finally:
        t1 = time.monotonic()
        Testbed.down_id(tb.id)
        out["down_s"] = round(time.monotonic() - t1, 2)
    return out


def naive_run(topo: Topology, idle_s: float, trust: str) -> dict:
    """One interpreter per device, started through the netns target, as a naive deployer would."""
    tb = Testbed.up(topo, naming.random_id())
    out: dict = {
        "topology": topo.name,
        "devices": len(topo.devices),
        "mode": "one process per device",
        "trust": trust,
        "load1": os.getloadavg()[0],
    }
    try:
        t0 = time.monotonic()
        plan, _ = plan_for(tb, federation=federation(topo, trust))
        out["pairs"] = plan.trust_pairs()
        write_node_files(plan, LocalTarget())
        pids = []
        for d, n in plan.nodes.items():
            target = NetnsTarget.for_device(tb, d)
            pid = target.start(
                [
                    sys.executable,
                    "-m",
                    "p2pvalue_node.cli",
                    "serve",
                    "--config",
                    n.config_path,
                    "--log-level",
                    "warning",
                ],
                log_path=n.log_path,
            )
            pids.append(pid)
        tb.state.record([process_record(p, "naive-node") for p in pids])
        dep = Deployment(tb.state, plan)
        pending = set(plan.nodes)
        while pending and time.monotonic() - t0 < 600:
            pending -= probing.healthy({d: dep.health_url(d) for d in pending}, timeout_s=2.0)
            time.sleep(0.2)
        out["healthy_s"] = round(time.monotonic() - t0, 2)
        out["not_healthy"] = len(pending)
        out["pss_per_node_mb"] = round(sum(pss_kib(p) for p in pids) / len(pids) / 1024, 1)
        out["idle"] = idle_cpu({"nodes": pids, "wire": wire_pids(tb)}, idle_s)
    finally:
        t1 = time.monotonic()
        Testbed.down_id(tb.id)
        out["down_s"] = round(time.monotonic() - t1, 2)
    return out


def dense_run(n: int, per_process: int, trust: str) -> dict:
    topo = grid(n)
    fed = federation(topo, trust)
    t_up = time.monotonic()
    tb = Testbed.up(topo, naming.random_id())
    out: dict = {
        "topology": topo.name,
        "devices": n,
        "mode": f"dense, {per_process} per process",
        "trust": trust,
        "up_s": round(time.monotonic() - t_up, 2),
        "load1": os.getloadavg()[0],
    }
    try:
        t0 = time.monotonic()
        dep = deploy(tb, federation=fed, nodes_per_process=per_process, timeout_s=300)
        out["healthy_s"] = round(time.monotonic() - t0, 2)
        out["pairs"] = dep.plan.trust_pairs()
        out["phases"] = tb.state.meta["deploy"].get("timings")
        procs = dep.processes() or {}
        hosts = sorted({p.pid for p in procs.values() if p.pid})
        launcher = tb.state.meta["deploy"]["launcher_pid"]
        total = sum(pss_kib(p) for p in hosts) + pss_kib(launcher)
        out["hosts"] = len(hosts)
        out["nodes_pss_total_mb"] = round(total / 1024)
        out["pss_per_node_mb"] = round(total / n / 1024, 2)
        st = dep.status()
        out["started"] = sum(1 for s in st if s.state == "started")
    finally:
        t1 = time.monotonic()
        Testbed.down_id(tb.id)
        out["down_s"] = round(time.monotonic() - t1, 2)
    return out


def git_commit() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-s", type=float, default=60)
    ap.add_argument(
        "--topology",
        default=str(REPO / "experiments" / "topologies" / "ffwien.yaml"),
        help="the topology of the fork and naive rows (default: FFWien)",
    )
    ap.add_argument("--grid", type=int, default=1000)
    ap.add_argument("--nodes-per-process", type=int, default=125)
    ap.add_argument(
        "--trust",
        default="none,all",
        help="FFWien rows with the fork launcher, one per trust "
        "mode (all: the goal's setting; none: the deployer alone, without anti-entropy between peers)",
    )
    ap.add_argument("--naive-trust", default="none", help="trust of the naive baseline row")
    ap.add_argument("--grid-trust", default="none", help="trust of the dense grid (site: each row a site)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "deploy_scale.md"))
    args = ap.parse_args()
    machine = describe()
    started = datetime.datetime.now(datetime.UTC)
    ffwien = load_topology(args.topology)
    results = []
    fork_runs = [lambda t=t: fork_run(ffwien, args.idle_s, t) for t in args.trust.split(",") if t]
    for run in (
        fork_runs
        + ([] if args.skip_naive else [lambda: naive_run(ffwien, args.idle_s, args.naive_trust)])
        + ([] if args.skip_dense else [lambda: dense_run(args.grid, args.nodes_per_process, args.grid_trust)])
    ):
        res = run()
        print(json.dumps(res), flush=True)
        results.append(res)
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC, commit {git_commit()}",
        "",
        f"Machine: {machine}.",
        "The machine is shared with other sessions' test runs; `load` is the 1-minute load average",
        "when each row started (2 cores).",
        f"Command: `flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/deploy_scale.py --idle-s {args.idle_s:g}"
        f"{'' if args.topology.endswith('ffwien.yaml') else ' --topology ' + args.topology}"
        f" --grid {args.grid} --nodes-per-process {args.nodes_per_process} --trust {args.trust}"
        f" --naive-trust {args.naive_trust} --grid-trust {args.grid_trust}"
        f"{' --skip-naive' if args.skip_naive else ''}{' --skip-dense' if args.skip_dense else ''}`",
        "",
        "| topology | devices | how | trust | trusting pairs | load | healthy s | PSS MB per node | nodes' PSS MB | "
        f"idle CPU % of a core over {args.idle_s:g} s: nodes / wire | started | down s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        idle = r.get("idle")
        idle_text = f"{idle['nodes']} / {idle['wire']}" if idle else "-"
        total = r.get("nodes_pss_total_mb") or round(r["pss_per_node_mb"] * r["devices"])
        lines.append(
            f"| {r['topology']} | {r['devices']} | {r['mode']} | {r['trust']} | {r.get('pairs', '')} | {r['load1']:.1f} "
            f"| {r['healthy_s']} | {r['pss_per_node_mb']} | {total} "
            f"| {idle_text} "
            f"| {r.get('started', r['devices'] - r.get('not_healthy', 0))} | {r['down_s']} |"
        )
    naive = next((r for r in results if r["mode"] == "one process per device"), None)
    fork = next((r for r in results if r["mode"] == "fork launcher" and naive and r["trust"] == naive["trust"]), None)
    if fork and naive:
        lines += [
            "",
            f"Baseline ratios (naive / fork launcher, same run, trust {naive['trust']}): time to healthy "
            f"{naive['healthy_s'] / fork['healthy_s']:.1f}x, PSS per node "
            f"{naive['pss_per_node_mb'] / fork['pss_per_node_mb']:.1f}x; idle CPU of the nodes "
            f"{naive['idle']['nodes']} % against {fork['idle']['nodes']} % of a core.",
        ]
    lines += ["", "Seconds per phase of `deploy()`:", ""]
    for r in results:
        if r.get("phases"):
            lines.append(
                f"- {r['topology']}, {r['mode']}, trust {r['trust']}: "
                + ", ".join(f"{k} {v}" for k, v in r["phases"].items())
            )
    lines.append("")
    path = Path(args.out)
    head = (
        "# Deploying federations at scale\n\nNewest first. Goals (issue 9): FFWien (246 nodes, trust all) "
        "healthy <= 10 s, PSS <= 12 MB per node, idle nodes + wire <= 25 % of a core over 60 s; "
        "1,000-device grid in dense mode healthy <= 60 s, nodes' memory <= 3 GB.\n\n"
    )
    old = path.read_text().split("\n\n", 2)[2] if path.exists() and path.read_text().startswith("# Deploying") else ""
    path.write_text(head + "\n".join(lines) + "\n" + old)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
