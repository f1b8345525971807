"""Issue 10's A/B: this tree's node ("new") against another commit's node ("base", default 77e41dd: main
when the issue was filed), interleaved in the same run.

On a shared machine, long single runs of base and then new measure the load of the moment more than the
node, so:
- Throughput: one node of each version runs at once (benchmarks/node_pair.py --objects 50) and the
  closed-loop load of node_throughput.py (50 clients) alternates between them in slices of --slice-s
  seconds (new first in odd blocks, base first in even ones); a block is one slice of each.
- Propagation: both federated pairs run at once (benchmarks/node_pair.py, one per node version) and
  single updates alternate between them: update i goes to new's A then base's A (the other way round for
  odd i), each waited for until bob's WebSocket on that pair's B has it, 10 ms apart. Consecutive
  updates form blocks of --block-size pairs.
Each figure is the median of the per-block ratios new/base; every block is listed with the load and the
CPU steal during it. The base node runs from a temporary worktree through PYTHONPATH (with this tree's
benchmark scripts); the worktree is removed afterwards. Run it under the benchmark lock:
  flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/node_ab.py [--base 77e41dd]
The section is added to results/node_hardening_ab.md (newest first) and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
from bench_machine import describe
from node_common import percentile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "node_hardening_ab.md"


def cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def env_for(base_tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if base_tree is not None:
        env["PYTHONPATH"] = str(base_tree / "node_images" / "p2pvalue")
    return env


class Pair:
    """One version's federated pair (node_pair.py) and bob's WebSocket on its B."""

    def __init__(self, name: str, base_tree: Path | None, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "node_pair.py"), *args],
            env=env_for(base_tree),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{name}: node_pair.py exited with {self.proc.wait()}")
        self.info = json.loads(line)
        self.replica = pycrdt.Doc()
        self.root = self.replica.get("root", type=pycrdt.Map)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def one_update(s: aiohttp.ClientSession, pair: Pair, ws: aiohttp.ClientWebSocketResponse, seq: int) -> float:
    """Send one update to A; return the seconds until bob's WebSocket on B shows it."""
    info = pair.info
    t0 = time.perf_counter()

    async def post() -> None:
        async with s.post(
            f"{info['a_url']}/api/objects/{info['oid']}/ops",
            headers={"Authorization": f"Bearer {info['alice']}"},
            json={"ops": [{"op": "set", "key": "seq", "value": seq}]},
        ) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{pair.name}: POST ops answered {r.status}")

    task = asyncio.create_task(post())
    while True:
        data = await asyncio.wait_for(ws.receive_json(), 30)
        if data.get("type") != "update":
            continue
        pair.replica.apply_update(base64.b64decode(data["update"]))
        got = pair.root.get("seq")
        if got is not None and int(got) == seq:
            elapsed = time.perf_counter() - t0
            break
    await task
    return elapsed


async def interleaved(pairs: list[Pair], warmup: int, count: int, gap_s: float) -> dict[str, list[float]]:
    delays: dict[str, list[float]] = {p.name: [] for p in pairs}
    async with aiohttp.ClientSession() as s:
        sockets = []
        for p in pairs:
            ws = await s.ws_connect(f"{p.info['b_url']}/api/ws", headers={"Authorization": f"Bearer {p.info['bob']}"})
            await ws.send_json({"type": "subscribe", "object": p.info["oid"]})
            first = await ws.receive_json()
            p.replica.apply_update(base64.b64decode(first["state"]))
            sockets.append(ws)
        for i in range(warmup + count):
            order = list(zip(pairs, sockets, strict=True))
            for p, ws in order if i % 2 == 0 else order[::-1]:
                d = await one_update(s, p, ws, i)
                if i >= warmup:
                    delays[p.name].append(d)
                await asyncio.sleep(gap_s)
        for ws in sockets:
            await ws.close()
    return delays


def propagation_blocks(base_tree: Path, warmup: int, count: int, block_size: int) -> list[dict[str, Any]]:
    pairs: list[Pair] = []
    try:
        pairs.append(Pair("new", None))
        pairs.append(Pair("base", base_tree))
        out = []
        done = 0
        while done < count:
            n = min(block_size, count - done)
            load = float(Path("/proc/loadavg").read_text().split()[0])
            before = cpu_times()
            delays = asyncio.run(interleaved(pairs, warmup if done == 0 else 0, n, 0.010))
            delta = [a - b for a, b in zip(cpu_times(), before, strict=True)]
            steal = 100 * delta[7] / max(1, sum(delta))
            block: dict[str, Any] = {"order": ["alternating updates"]}
            for v in ("new", "base"):
                d = delays[v]
                block[v] = {
                    "n": len(d),
                    "p50_ms": percentile(d, 50) * 1000,
                    "p90_ms": percentile(d, 90) * 1000,
                    "load": load,
                    "steal_pct": steal,
                }
            print(f"propagation block {len(out) + 1}: {block}", flush=True)
            out.append(block)
            done += n
        return out
    finally:
        for p in pairs:
            p.close()


def throughput_blocks(base_tree: Path, blocks: int, slice_s: float) -> list[dict[str, Any]]:
    from node_throughput import load

    nodes: list[Pair] = []
    try:
        nodes.append(Pair("new", None, "--objects", "50"))
        nodes.append(Pair("base", base_tree, "--objects", "50"))
        for n in nodes:  # warm-up
            asyncio.run(load(n.info["url"], n.info["token"], n.info["oids"], 50, 1.0))
        out = []
        for i in range(blocks):
            order = nodes if i % 2 == 0 else nodes[::-1]
            block: dict[str, Any] = {"order": [n.name for n in order]}
            for n in order:
                load_avg = float(Path("/proc/loadavg").read_text().split()[0])
                before = cpu_times()
                t0 = time.perf_counter()
                lat, errors = asyncio.run(load(n.info["url"], n.info["token"], n.info["oids"], 50, slice_s))
                elapsed = time.perf_counter() - t0
                delta = [a - b for a, b in zip(cpu_times(), before, strict=True)]
                block[n.name] = {
                    "updates_per_s": len(lat) / elapsed,
                    "p50_ms": percentile(lat, 50) * 1000,
                    "errors": errors,
                    "load": load_avg,
                    "steal_pct": 100 * delta[7] / max(1, sum(delta)),
                }
            print(f"throughput block {i + 1}: {block}", flush=True)
            out.append(block)
        return out
    finally:
        for n in nodes:
            n.close()


def table(rows: list[dict[str, Any]], key: str, unit: str, what: str) -> tuple[str, float]:
    lines = [
        f"| block | order | load new / base | steal % new / base | {what} new | base | new / base |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for i, b in enumerate(rows, 1):
        ratio = b["new"][key] / b["base"][key]
        ratios.append(ratio)
        lines.append(
            f"| {i} | {' then '.join(b['order'])} | {b['new']['load']:.1f} / {b['base']['load']:.1f} | "
            f"{b['new']['steal_pct']:.1f} / {b['base']['steal_pct']:.1f} | {b['new'][key]:.2f}{unit} | "
            f"{b['base'][key]:.2f}{unit} | {ratio:.2f} |"
        )
    median = statistics.median(ratios)
    lines.append(f"| **median of the block ratios** | | | | | | **{median:.2f}** |")
    return "\n".join(lines), median


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="77e41dd", help="the base commit")
    ap.add_argument("--count", type=int, default=1000, help="measured propagation updates per version")
    ap.add_argument("--block-size", type=int, default=100, help="updates per version in a propagation block")
    ap.add_argument("--throughput-blocks", type=int, default=12)
    ap.add_argument("--slice-s", type=float, default=2.0, help="closed-loop seconds per throughput slice")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "node_images"], cwd=ROOT, capture_output=True, text=True)
    commit = commit.strip() + (" + uncommitted node changes" if dirty.stdout.strip() else "")
    machine = describe()
    started = dt.datetime.now(dt.UTC)
    base_tree = Path(tempfile.mkdtemp(prefix="cnlab-node-base."))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(base_tree), args.base], cwd=ROOT, check=True)
    try:
        tput = throughput_blocks(base_tree, args.throughput_blocks, args.slice_s)
        prop = propagation_blocks(base_tree, 50, args.count, args.block_size)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    ended = dt.datetime.now(dt.UTC)
    t_table, t_median = table(tput, "updates_per_s", "", "updates/s (closed loop, 50 clients)")
    p_table, p_median = table(prop, "p50_ms", " ms", "propagation p50")
    p90_table, p90_median = table(prop, "p90_ms", " ms", "propagation p90")
    verdict = (
        f"throughput {t_median:.2f}x ({'met' if t_median >= 0.90 else 'NOT met'}: >= 0.90), propagation p50 "
        f"{p_median:.2f}x ({'met' if p_median <= 1.10 else 'NOT met'}: <= 1.10)"
    )
    section = (
        f"## A/B in alternating blocks, {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC (commit {commit} against "
        f"{args.base}): {verdict}\n\n"
        f"- machine: {machine} (shared with other sessions)\n"
        f"- command: `flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/node_ab.py --base {args.base} "
        f"--count {args.count} --block-size {args.block_size} --throughput-blocks {args.throughput_blocks} "
        f"--slice-s {args.slice_s:g}`: throughput runs one node of each version at once and alternates the "
        f"closed-loop load (50 clients, 50 objects) between them in {args.slice_s:g} s slices; propagation runs both "
        "pairs at once and "
        f"alternates single updates between them (50 warm-up updates each, then {args.count} each, in blocks of "
        f"{args.block_size}); load = 1-minute load average at the start of each run or block, steal = CPU steal "
        "share during it\n\n"
        f"{t_table}\n\n{p_table}\n\n{p90_table}\n"
    )
    old = RESULTS.read_text()
    head, sep, rest = old.partition("\n## ")
    RESULTS.write_text(head.rstrip("\n") + "\n\n" + section + (sep + rest if sep else ""))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
