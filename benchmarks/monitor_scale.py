"""Prometheus scraping the FFWien federation: its CPU share and memory, and what it costs the wire.

    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/monitor_scale.py \
        [--intervals 1,2] [--duration-s 180] [--topology experiments/topologies/ffwien.yaml]

Brings up the FFWien import (246 devices, 395 links, wire shaper), deploys a P2Pvalue node on
every device (toolkit.deploy, fork launcher), then for each scrape interval starts the testbed's
Prometheus (`toolkit.monitor.testbed_monitor.start`), waits until every target is up, lets it run
20 s, and measures over --duration-s:

- Prometheus CPU (utime+stime from /proc/PID/stat, as a share of one core) and RSS (max of
  samples every 5 s), head series, samples ingested per second, the slowest scrape;
- the wire exporter's CPU and RSS;
- the `stats` round trip of each wire shard as seen by a client (the time a scrape holds that
  shard's loop: frames due meanwhile are released late), 20 calls per shard.

Goal (issue 11): Prometheus <= 15 % of one core and <= 500 MB RSS at 1 s. Writes
benchmarks/results/monitor_scale.md (appends a dated section) and prints JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_machine import describe  # noqa: E402

from toolkit.monitor import testbed_monitor  # noqa: E402
from toolkit.monitor.exporter_process import ExporterProcess  # noqa: E402
from toolkit.monitor.prometheus import api_get  # noqa: E402
from toolkit.testbed import naming  # noqa: E402
from toolkit.testbed.testbed import Testbed  # noqa: E402
from toolkit.topology.loader import load_topology  # noqa: E402
from toolkit.wire.control import WireClient  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def q(url: str, expr: str) -> float | None:
    res = api_get(url, "query", query=expr)["result"]
    return float(res[0]["value"][1]) if res else None


def stats_round_trip_ms(sockets: list[str], calls: int = 20) -> list[float]:
    out = []
    for s in sockets:
        with WireClient(s) as c:
            for _ in range(calls):
                t0 = time.perf_counter()
                c.stats()
                out.append((time.perf_counter() - t0) * 1000)
    return out


def measure_interval(tb: Testbed, interval_s: float, duration_s: float, n_targets: int) -> dict:
    mon = testbed_monitor.start(tb.id, scrape_interval_s=interval_s)
    exporter = ExporterProcess.open(tb.state.dir / "monitor" / "exporter.json")
    assert exporter is not None
    try:
        t0 = time.monotonic()
        up_after = None
        while time.monotonic() - t0 < 60:
            active = mon.api("targets")["activeTargets"]
            if len(active) >= n_targets and all(t["health"] == "up" for t in active):
                up_after = time.monotonic() - t0
                break
            time.sleep(0.5)
        time.sleep(20)  # warm-up: series created, first head chunks cut
        cpu0, ecpu0, w0 = cpu_s(mon.pid), cpu_s(exporter.pid), time.monotonic()
        samples0 = q(mon.url, "prometheus_tsdb_head_samples_appended_total") or 0.0
        rss, ersss = [], []
        while time.monotonic() - w0 < duration_s:
            rss.append(rss_mb(mon.pid))
            ersss.append(rss_mb(exporter.pid))
            time.sleep(5)
        wall = time.monotonic() - w0
        cpu1, ecpu1 = cpu_s(mon.pid), cpu_s(exporter.pid)
        samples1 = q(mon.url, "prometheus_tsdb_head_samples_appended_total") or 0.0
        active = mon.api("targets")["activeTargets"]
        rt = stats_round_trip_ms(testbed_monitor.wire_sockets(tb.state))
        return {
            "interval_s": interval_s,
            "targets": len(active),
            "targets_up": sum(1 for t in active if t["health"] == "up"),
            "all_up_after_s": None if up_after is None else round(up_after, 1),
            "measured_s": round(wall, 1),
            "prometheus_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "prometheus_rss_mb_max": round(max(rss), 1),
            "head_series": q(mon.url, "prometheus_tsdb_head_series"),
            "samples_per_s": round((samples1 - samples0) / wall),
            "slowest_scrape_s": q(mon.url, "max(scrape_duration_seconds)"),
            "wire_scrape_s": q(mon.url, 'max(scrape_duration_seconds{job="wire"})'),
            "exporter_cpu_pct": round(100 * (ecpu1 - ecpu0) / wall, 1),
            "exporter_rss_mb_max": round(max(ersss), 1),
            "wire_stats_rtt_ms_p50": round(statistics.median(rt), 2),
            "wire_stats_rtt_ms_max": round(max(rt), 2),
            "wire_lateness_p99_max_s": q(mon.url, "max(shard:cnlab_wire_release_lateness_seconds:p99)"),
        }
    finally:
        testbed_monitor.stop(tb.id)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topology", default=str(REPO / "experiments/topologies/ffwien.yaml"))
    ap.add_argument("--intervals", default="1", help="Comma-separated scrape intervals in seconds.")
    ap.add_argument("--duration-s", type=float, default=180.0)
    ap.add_argument(
        "--nodes-per-process",
        type=int,
        default=None,
        help="Deploy in dense mode, N nodes per process (default: one forked process per node).",
    )
    ap.add_argument("--no-write", action="store_true", help="Do not append to the results file.")
    args = ap.parse_args()
    from toolkit.deploy.deployment import Deployment
    from toolkit.deploy.direct import deploy
    from toolkit.errors import RunError

    machine = describe()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    topo = load_topology(Path(args.topology))
    tb = Testbed.up(topo, naming.random_id(), shaper="wire")
    rows = []
    try:
        t0 = time.monotonic()
        deploy_error = None
        try:
            dep = deploy(tb, nodes_per_process=args.nodes_per_process)
        except RunError as e:  # a busy machine: measure what did come up, and say so
            deploy_error = str(e)[:300]
            print(f"deploy: {deploy_error}", file=sys.stderr, flush=True)
            dep = Deployment.open(tb.id)
        deploy_s = time.monotonic() - t0
        n_targets = len(dep.nodes) + 2  # nodes + the wire exporter + Prometheus itself
        for interval in (float(x) for x in args.intervals.split(",")):
            rows.append(measure_interval(tb, interval, args.duration_s, n_targets))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        tb.down()
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "commit": commit,
        "machine": machine,
        "topology": topo.name,
        "devices": len(topo.devices),
        "links": len(topo.links),
        "nodes": len(dep.nodes),
        "deploy_s": round(deploy_s, 1),
        "nodes_per_process": args.nodes_per_process,
        "deploy_error": deploy_error,
        "rows": rows,
    }
    print(json.dumps(result, indent=1))
    if not args.no_write:
        out = REPO / "benchmarks/results/monitor_scale.md"
        head = (
            ""
            if out.exists()
            else (
                "# Prometheus scraping the FFWien federation\n\n`benchmarks/monitor_scale.py`; goal (issue 11): "
                "Prometheus <= 15 % of one core and <= 500 MB RSS at 1 s scrapes.\n"
            )
        )
        lines = [
            head,
            f"\n## {result['date']} (commit {commit})\n",
            f"Machine: {machine}. Shared with other "
            "sessions (other helpers' tests and benchmarks may have run meanwhile).\n",
            f"{topo.name}: {len(topo.devices)} devices, {len(topo.links)} links, {len(dep.nodes)} nodes "
            f"(idle federation: no workload), deployed in {deploy_s:.1f} s "
            f"({'dense, ' + str(args.nodes_per_process) + ' nodes per process' if args.nodes_per_process else 'fork launcher'}"
            f"{'; deploy reported: ' + deploy_error if deploy_error else ''}); measured {args.duration_s:.0f} s "
            "per interval after all targets were up and 20 s of warm-up.\n",
            "| interval | targets up | Prometheus CPU | Prometheus RSS max | head series | samples/s | "
            "slowest scrape | exporter CPU | exporter RSS | wire stats RTT p50 / max | wire lateness p99 (worst shard) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['interval_s']:g} s | {r['targets_up']}/{r['targets']} | {r['prometheus_cpu_pct']} % | "
                f"{r['prometheus_rss_mb_max']} MB | {r['head_series']:.0f} | {r['samples_per_s']} | "
                f"{r['slowest_scrape_s']} s | {r['exporter_cpu_pct']} % | {r['exporter_rss_mb_max']} MB | "
                f"{r['wire_stats_rtt_ms_p50']} / {r['wire_stats_rtt_ms_max']} ms | {r['wire_lateness_p99_max_s']} s |"
            )
        with open(out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
