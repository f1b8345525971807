"""Where the time of `cnlab deploy` goes: FFWien (246 devices), trust all, the fork launcher.

    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/deploy_profile.py [--runs 3]
        [--nodes-per-process N] [--grid 1000 --trust none]

Per run (a fresh testbed each): the phases of `deploy()` (the deployer's own clock), the CPU
seconds each party spent during the deploy (the deployer itself, also per step of its progress;
the launcher, the nodes, the wire), and each node's start-up from its fork to its `ready` line (the last write to its log) in fork mode;
then the seconds each step of `down` took, and the launcher's own account of its shutdown.
Prints one JSON line per run; writes nothing (deploy_scale.py records the goal figures).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from deploy_scale import cpu_s, federation, grid, wire_pids  # noqa: E402

from toolkit.deploy.direct import deploy  # noqa: E402
from toolkit.testbed import naming  # noqa: E402
from toolkit.testbed.testbed import Testbed  # noqa: E402
from toolkit.topology.loader import load_topology  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
BOOT = time.time() - float(Path("/proc/uptime").read_text().split()[0])


def started_at(pid: int) -> float:
    """Wall-clock time a process started (from /proc/PID/stat, in clock ticks since boot)."""
    return BOOT + int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / TICK


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_run(topology: str, trust: str, nodes_per_process: int | None, grid_n: int | None) -> dict[str, object]:
    topo = grid(grid_n) if grid_n else load_topology(topology)
    tb = Testbed.up(topo, naming.random_id())
    out: dict[str, object] = {"load1": os.getloadavg()[0]}
    try:
        wires = wire_pids(tb)
        wire0 = cpu_s(wires)
        me0 = own_cpu_s()
        t0 = time.time()
        marks: dict[str, float] = {}  # the deployer's CPU when each of its steps began

        def step(what: str, done: int, total: int) -> None:
            marks.setdefault(what, own_cpu_s())

        dep = deploy(
            tb, federation=federation(topo, trust), nodes_per_process=nodes_per_process, timeout_s=300, progress=step
        )
        t1 = time.time()
        names, cpus = list(marks), [*marks.values(), own_cpu_s()]
        out["deployer_cpu_s"] = {n: round(cpus[i + 1] - cpus[i], 2) for i, n in enumerate(names)}
        procs = dep.processes() or {}
        launcher = int(tb.state.meta["deploy"]["launcher_pid"])
        pids = sorted({p.pid for p in procs.values() if p.pid})
        out["healthy_s"] = tb.state.meta["deploy"]["healthy_s"]
        out["phases"] = tb.state.meta["deploy"]["timings"]
        out["cpu_s"] = {
            "deployer": round(own_cpu_s() - me0, 2),
            "launcher": round(cpu_s([launcher]), 2),
            "nodes": round(cpu_s(pids), 2),
            "wire": round(cpu_s(wires) - wire0, 2),
        }
        out["wall_s"] = round(t1 - t0, 2)
        if nodes_per_process is None:
            starts = {d: started_at(p.pid) for d, p in procs.items() if p.pid}
            ready = {d: Path(dep.nodes[d].log_path).stat().st_mtime for d in starts}
            lat = sorted(ready[d] - starts[d] for d in starts)
            out["fork_first_last_s"] = [round(min(starts.values()) - t0, 2), round(max(starts.values()) - t0, 2)]
            out["ready_last_s"] = round(max(ready.values()) - t0, 2)
            out["fork_to_ready_s"] = {
                "median": round(statistics.median(lat), 3),
                "p90": round(lat[int(0.9 * len(lat))], 3),
                "max": round(lat[-1], 3),
            }
            out["node_cpu_ms_mean"] = round(1000 * out["cpu_s"]["nodes"] / len(pids), 1)  # type: ignore[index]
    finally:
        out["down"] = timed_down(tb)
    return out


def timed_down(tb: Testbed) -> dict[str, object]:
    """`down`, with the seconds each of its steps took and the launcher's own account of its stop."""
    t0 = time.monotonic()
    steps: list[tuple[str, float]] = []
    launcher_log = tb.state.dir / "launcher.log"
    said: list[str] = []

    def log(msg: str) -> None:
        steps.append((msg, time.monotonic()))
        if launcher_log.exists() and not said:
            said.extend(line for line in launcher_log.read_text().splitlines() if line.startswith("launcher:"))

    gone: dict[str, float] = {}  # when the testbed's last namespace / root-side interface vanished
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            for what, where in (("namespaces", "/run/netns"), ("interfaces", "/sys/class/net")):
                if what not in gone and not any(tb.id in n for n in os.listdir(where)):
                    gone[what] = round(time.monotonic() - t0, 2)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    Testbed.down_id(tb.id, log=log)
    end = time.monotonic()
    watching.set()
    watcher.join()
    marks = [t for _, t in steps] + [end]
    return {
        "total_s": round(end - t0, 2),
        "steps_s": {msg: round(marks[i + 1] - t, 2) for i, (msg, t) in enumerate(steps)},
        "before_first_step_s": round((steps[0][1] if steps else end) - t0, 2),
        "launcher": said[-4:],
        "gone_at_s": gone,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trust", default="all")
    ap.add_argument("--nodes-per-process", type=int, default=None)
    ap.add_argument("--topology", default=str(REPO / "experiments" / "topologies" / "ffwien.yaml"))
    ap.add_argument("--grid", type=int, default=None, help="a grid of this many devices instead of --topology")
    args = ap.parse_args()
    for _ in range(args.runs):
        print(json.dumps(one_run(args.topology, args.trust, args.nodes_per_process, args.grid)), flush=True)


if __name__ == "__main__":
    main()
