"""How should the executor talk to the kernel? Three ways to add static routes in namespaces.

    sudo .venv/bin/python benchmarks/testbed_executor.py [--namespaces 50] [--routes 200]

Creates N throw-away namespaces `cnbench<pid>-<i>` (deleted at the end) with one veth each and adds
R /32 routes per namespace: (1) one forked `ip route add` per route, (2) one `ip -n NS -batch -`
per namespace, (3) pyroute2 0.9 `IPRoute(netns=NS).route("add", ...)`. Writes
benchmarks/results/testbed_executor.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time
from pathlib import Path

from bench_machine import describe

REPO = Path(__file__).resolve().parent.parent


def batch(lines: list[str], netns: str | None = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    subprocess.run(argv, input="\n".join(lines) + "\n", text=True, check=True)


def routes(r: int, gw: str, dev: str) -> list[tuple[str, str, str]]:
    return [(f"198.19.{j // 250}.{j % 250 + 1}/32", gw, dev) for j in range(r)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--routes", type=int, default=200)
    ap.add_argument("--fork-sample", type=int, default=500, help="forked `ip` calls actually timed")
    args = ap.parse_args()
    n, r = args.namespaces, args.routes
    prefix = f"cnbench{os.getpid()}-"
    names = [f"{prefix}{i}" for i in range(n)]
    batch([f"netns add {ns}" for ns in names])
    results: dict[str, float] = {}
    try:
        batch([f"link add bx0 netns {ns} type veth peer name bx1 netns {ns}" for ns in names])
        for ns in names:
            batch(["link set bx0 up", "link set bx1 up", "addr add 198.19.128.0/31 dev bx0"], ns)

        # 1. one fork per operation (timed on a sample, extrapolated)
        sample = routes(args.fork_sample, "198.19.128.1", "bx0")
        t0 = time.monotonic()
        for dst, gw, dev in sample:
            subprocess.run(["ip", "-n", names[0], "route", "add", dst, "via", gw, "dev", dev], check=True)
        per_op = (time.monotonic() - t0) / len(sample)
        results["fork per operation (extrapolated)"] = per_op * n * r
        batch([f"route del {d}" for d, _, _ in sample], names[0])

        # 2. ip -batch, one per namespace
        t0 = time.monotonic()
        for ns in names:
            batch([f"route add {d} via {g} dev {dv}" for d, g, dv in routes(r, "198.19.128.1", "bx0")], ns)
        results["ip -n NS -batch - (one per namespace)"] = time.monotonic() - t0
        for ns in names:
            batch([f"route del {d}" for d, _, _ in routes(r, "", "")], ns)

        # 3. pyroute2
        try:
            from pyroute2 import IPRoute

            t0 = time.monotonic()
            for ns in names:
                with IPRoute(netns=ns) as ipr:
                    idx = ipr.link_lookup(ifname="bx0")[0]
                    for d, g, _ in routes(r, "198.19.128.1", "bx0"):
                        ipr.route("add", dst=d, gateway=g, oif=idx)
            results["pyroute2 IPRoute(netns=NS)"] = time.monotonic() - t0
        except ImportError:
            pass
    finally:
        batch([f"netns del {ns}" for ns in names])

    total = n * r
    lines = [
        "# Executor: how to apply thousands of kernel operations",
        "",
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {describe()}; "
        "sequential (no parallelism).",
        f"Command: `sudo .venv/bin/python benchmarks/testbed_executor.py --namespaces {n} --routes {r}`",
        "",
        f"{n} namespaces x {r} /32 routes = {total} routes.",
        "",
        "| method | seconds | us per route |",
        "|---|---|---|",
    ]
    for k, v in results.items():
        lines.append(f"| {k} | {v:.2f} | {v / total * 1e6:.0f} |")
    ffwien = 120_540  # static routes (v4 + v6) of the FFWien testbed
    est = ", ".join(f"{k.split(' (')[0]} ~{v / total * ffwien:.0f} s" for k, v in results.items())
    lines += [
        "",
        f"Extrapolated to FFWien's {ffwien} static routes (v4 + v6), one namespace at a time: "
        f"{est}. The executor uses `ip -batch` / `tc -batch`, 4 namespaces at a time.",
    ]
    out = REPO / "benchmarks" / "results" / "testbed_executor.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
