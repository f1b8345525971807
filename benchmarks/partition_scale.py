"""Partition and heal of a large emulated testbed: wall time and where it goes.

    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/partition_scale.py
    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/partition_scale.py --grid 200   # quick
    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/partition_scale.py --code /tmp/base --label before

Brings up experiments/topologies/grid-1000.yaml (or `--grid N`: a generated grid of N devices,
2 ms links, its left and right halves as sites west and east) with no nodes, partitions it into
west | east, heals it, and tears it down. Per step: wall time and its breakdown (routes computed,
routes applied to the kernel, links set down/up in the shaper, the rest), the number of route
changes, a ping across the cut (must fail at once with "unreachable" while cut, succeed after the
heal) and, with `--verify`, a digest of every device's routes after up, partition and heal (heal
must give back the routes of up; the partition digest is comparable between code versions).

`--code DIR` imports `toolkit` from another checkout (e.g. `git worktree add /tmp/base main`) so
the old code path can be measured with the same script, in the same locked session. Code that
records its own breakdown (`Testbed.last_timings`) is read as is; older code is timed by
wrapping the functions it calls (`static_routes`, `route_changes`, `ip_batch`, the shaper's
`set_up`). Figures are appended to benchmarks/results/partition_scale.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "partition_scale.md"


def git_commit(path: Path) -> str:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Timer:
    """Seconds spent in wrapped callables, by bucket (wrappers do not nest across buckets here)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.route_changes = 0

    def wrap(self, bucket: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[bucket] = self.spent.get(bucket, 0.0) + time.perf_counter() - t0
                self.calls[bucket] = self.calls.get(bucket, 0) + 1

        return timed


@contextmanager
def instrumented(tb: Any, timer: Timer) -> Iterator[None]:
    """Time the old code path by wrapping what Testbed.partition/heal call."""
    import toolkit.testbed.testbed as mod

    saved = {name: getattr(mod, name) for name in ("static_routes", "route_changes", "ip_batch") if hasattr(mod, name)}
    shaper_set_up = tb.shaper.set_up
    try:
        for name, fn in saved.items():
            setattr(mod, name, timer.wrap("apply_s" if name == "ip_batch" else "compute_s", fn))
        timed_batch = mod.ip_batch

        def counting_batch(lines: list[str], *args: Any, **kwargs: Any) -> Any:
            timer.route_changes += len(lines)
            return timed_batch(lines, *args, **kwargs)

        mod.ip_batch = counting_batch
        tb.shaper.set_up = timer.wrap("links_s", shaper_set_up)
        yield
    finally:
        for name, fn in saved.items():
            setattr(mod, name, fn)
        tb.shaper.set_up = shaper_set_up


def route_digest(tb: Any, dump: Path | None = None) -> tuple[str, int]:
    """sha256 of every device's v4 and v6 data-plane routes (testbed id replaced), and how many;
    the routes themselves go to `dump` if given."""
    h = hashlib.sha256()
    count = 0
    text = []
    for name, d in tb.plan.devices.items():
        for fam in ("-4", "-6"):
            out = subprocess.run(
                ["ip", "-n", d.netns, fam, "route", "show"], capture_output=True, text=True, check=True
            )
            # the management subnet depends on the testbeds up at the time: not compared
            lines = sorted(x for x in out.stdout.replace(tb.id, "TID").splitlines() if "dev mgmt0" not in x)
            count += sum(1 for line in lines if " via " in line)
            h.update(f"{name} {fam}\n".encode() + "\n".join(lines).encode() + b"\n")
            text += [f"{name} {fam} {line}" for line in lines]
    if dump:
        dump.write_text("\n".join(text) + "\n")
    return h.hexdigest()[:16], count


def ping(tb: Any, a: str, b: str) -> dict[str, Any]:
    t0 = time.monotonic()
    r = tb.exec(a, ["ping", "-n", "-c", "1", "-W", "5", tb.address(b)])
    text = (r.stdout + r.stderr).strip().splitlines()
    return {"ok": r.returncode == 0, "s": round(time.monotonic() - t0, 3), "said": (text or [""])[-1][:90]}


def grid_with_halves(n: int) -> Any:
    """A generated grid (benchmarks/testbed_scale.py's) with sites west and east by column."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from testbed_scale import grid

    from toolkit.topology.model import Topology

    topo = grid(n)
    side = round(n**0.5)
    devs = {k: replace(d, site="west" if int(k.split("x")[1]) < side // 2 else "east") for k, d in topo.devices.items()}
    return Topology(topo.name, devs, topo.links, sites=("west", "east"))


def step(tb: Any, what: str, call: Callable[[], Any]) -> dict[str, Any]:
    timer = Timer()
    own = hasattr(tb, "last_timings")
    t0 = time.perf_counter()
    if own:
        result = call()
    else:
        with instrumented(tb, timer):
            result = call()
    wall = time.perf_counter() - t0
    parts = dict(tb.last_timings) if own else {**timer.spent, "route_changes": timer.route_changes}
    known = sum(v for k, v in parts.items() if k.endswith("_s"))
    return {
        "step": what,
        "wall_s": round(wall, 2),
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in parts.items()},
        "other_s": round(wall - known, 2),
        "links_changed": len(result),
        "load1": round(os.getloadavg()[0], 1),
    }


def set_route_workers(n: int | None) -> str:
    """Route-applying threads for the next step (code that has them); returns what was used."""
    import toolkit.testbed.executor as ex

    if not hasattr(ex, "ROUTE_WORKERS"):
        return "ip -batch, 1 at a time"
    if n:
        ex.ROUTE_WORKERS = n
    return f"rtnetlink, {ex.ROUTE_WORKERS} threads"


def time_plan(topo: Any) -> float:
    """Seconds of `plan_testbed` alone (pure), with nothing memoised before or after."""
    from toolkit.testbed import plan

    def forget() -> None:
        routing = getattr(plan, "routing", None)
        if routing is not None:
            routing.next_hop_links.cache_clear()

    forget()
    t0 = time.perf_counter()
    plan.plan_testbed(topo, "pb", shaper="wire", state_dir="/tmp/partition-scale-plan")
    took = time.perf_counter() - t0
    forget()
    return round(took, 2)


def measure(topo: Any, verify: Path | None, workers: list[int | None]) -> dict[str, Any]:
    """Up, then per entry of `workers` a partition and a heal, then down."""
    from toolkit.testbed import naming
    from toolkit.testbed.testbed import Testbed

    tid = naming.random_id()
    out: dict[str, Any] = {"topology": topo.name, "devices": len(topo.devices), "links": len(topo.links)}
    out["plan_s"] = time_plan(topo)
    t0 = time.monotonic()
    tb = Testbed.up(topo, tid, shaper="wire")
    out["up_s"] = round(time.monotonic() - t0, 1)
    out["steps"] = []
    try:
        west = [d for d in tb.plan.devices.values() if d.site == "west"]
        east = [d for d in tb.plan.devices.values() if d.site == "east"]
        a, b = west[0].name, east[-1].name
        if verify:
            out["digest_up"] = route_digest(tb, verify / "up.routes")
        for n in workers:
            how = set_route_workers(n)
            out["steps"].append({**step(tb, "partition", lambda: tb.partition(["west", "east"])), "how": how})
            out["ping_cut"] = ping(tb, a, b)
            if verify and "digest_partition" not in out:
                out["digest_partition"] = route_digest(tb, verify / "partition.routes")
            out["steps"].append({**step(tb, "heal", tb.heal), "how": how})
            out["ping_healed"] = ping(tb, a, b)
            if verify and "digest_heal" not in out:
                out["digest_heal"] = route_digest(tb, verify / "heal.routes")
    finally:
        t1 = time.monotonic()
        Testbed.down_id(tid)
        out["down_s"] = round(time.monotonic() - t1, 1)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out["left_behind"] = sum(1 for line in left.splitlines() if f"cn{tid}" in line)
    return out


def write(res: dict[str, Any], args: argparse.Namespace, machine: str, commit: str) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_machine import append_results

    header = (
        "# Partition and heal at scale\n\n"
        "`benchmarks/partition_scale.py`: a testbed with no nodes, partitioned into its west and east\n"
        "halves, then healed. Breakdown: `compute_s` routes computed, `apply_s` routes written to the\n"
        "kernel, `links_s` links set down/up in the shaper, `other_s` the rest (state file, locks).\n"
        "The machine is shared with other sessions: `load` is the 1-minute load average after the step.\n"
    )
    lines = [
        "",
        f"## {res['topology']}, {args.label}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC (code {commit})",
        "",
        f"Machine: {machine}",
        "",
        f"Command: `benchmarks/partition_scale.py {' '.join(sys.argv[1:])}`",
        "",
        f"{res['devices']} devices, {res['links']} links; `plan_testbed` {res['plan_s']} s, "
        f"up {res['up_s']} s, down {res['down_s']} s; "
        f"namespaces left behind: {res['left_behind']}.",
        "",
        "| step | routes applied by | wall s | compute s | apply s | links s | other s | route changes | links | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in res["steps"]:
        lines.append(
            f"| {s['step']} | {s['how']} | {s['wall_s']} | {s.get('compute_s', '')} | {s.get('apply_s', '')} | "
            f"{s.get('links_s', '')} | {s['other_s']} | {s.get('route_changes', '')} | {s['links_changed']} | {s['load1']} |"
        )
    lines += [
        "",
        f"- ping across the cut while partitioned: {res['ping_cut']}",
        f"- ping after the heal: {res['ping_healed']}",
    ]
    if "digest_up" in res:
        lines.append(
            f"- route digests (sha256 prefix, routes with a gateway): up {res['digest_up']}, "
            f"partition {res['digest_partition']}, heal {res['digest_heal']}"
        )
    append_results(Path(args.out), header, lines)
    print(f"appended to {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topology", default=str(REPO / "experiments" / "topologies" / "grid-1000.yaml"))
    ap.add_argument("--grid", type=int, help="a generated grid of this many devices instead of --topology")
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose toolkit is measured")
    ap.add_argument("--label", default="this branch", help="what the code is, for the results")
    ap.add_argument(
        "--verify", type=Path, metavar="DIR", help="digest every device's routes into DIR (slow: 2 `ip` per device)"
    )
    ap.add_argument(
        "--route-workers",
        default="",
        help="comma-separated thread counts: one partition and heal each (default: one with the code's default)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("partition_scale.py needs root (it brings up a testbed)")
    sys.path.insert(0, str(args.code.resolve()))
    import toolkit

    if Path(toolkit.__file__).resolve().parent.parent != args.code.resolve():
        sys.exit(f"imported toolkit from {toolkit.__file__}, not from {args.code}")
    sys.path.insert(1, str(REPO / "benchmarks"))
    from bench_machine import describe

    from toolkit.topology.loader import load_topology

    machine = describe()
    topo = grid_with_halves(args.grid) if args.grid else load_topology(args.topology)
    if args.verify:
        args.verify.mkdir(parents=True, exist_ok=True)
    workers = [int(x) for x in args.route_workers.split(",") if x] or [None]
    res = measure(topo, args.verify, workers)
    print(json.dumps(res), flush=True)
    if not args.no_write:
        write(res, args, machine, git_commit(args.code))


if __name__ == "__main__":
    main()
