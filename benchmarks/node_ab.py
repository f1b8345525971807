"""Issue 10's A/B: this tree's node ("new") against another commit's node ("base", default 77e41dd: main
when the issue was filed), in short alternating blocks of the same run.

On a shared machine, long single runs of base and then new measure the load of the moment more than the
node. So each block runs both, one right after the other (new first in odd blocks, base first in even
ones), and the figure is the median of the per-block ratios new/base; every block is listed with the
load and the CPU steal during it. Both use this tree's benchmark scripts (node_throughput.py and
node_propagation.py with --json); the base node runs from a temporary worktree through PYTHONPATH and the
worktree is removed afterwards. Run it under the benchmark lock:
  flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/node_ab.py [--base 77e41dd] [--blocks 6]
The section is added to results/node_hardening_ab.md (newest first) and printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_machine import describe

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "node_hardening_ab.md"


def cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def run(script: str, args: list[str], base_tree: Path | None) -> dict[str, Any]:
    """One run of a benchmark script (new, or base when base_tree is given), with load and steal."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if base_tree is not None:
        env["PYTHONPATH"] = str(base_tree / "node_images" / "p2pvalue")
    load = float(Path("/proc/loadavg").read_text().split()[0])
    before = cpu_times()
    out = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    after = cpu_times()
    delta = [a - b for a, b in zip(after, before, strict=True)]
    steal = 100 * delta[7] / max(1, sum(delta))
    return {**json.loads(out.strip().splitlines()[-1]), "load": load, "steal_pct": steal}


def blocks(script: str, args: list[str], count: int, base_tree: Path) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        order = ["new", "base"] if i % 2 == 0 else ["base", "new"]
        block: dict[str, Any] = {"order": order}
        for v in order:
            block[v] = run(script, args, base_tree if v == "base" else None)
            print(f"block {i + 1} {script} {v}: {block[v]}", flush=True)
        out.append(block)
    return out


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
    ap.add_argument("--blocks", type=int, default=6, help="propagation blocks (new and base each)")
    ap.add_argument("--count", type=int, default=100, help="measured updates per propagation run")
    ap.add_argument("--throughput-blocks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0, help="closed-loop seconds per throughput run")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "node_images"], cwd=ROOT, capture_output=True, text=True)
    commit = commit.strip() + (" + uncommitted node changes" if dirty.stdout.strip() else "")
    machine = describe()
    started = dt.datetime.now(dt.UTC)
    base_tree = Path(tempfile.mkdtemp(prefix="cnlab-node-base."))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(base_tree), args.base], cwd=ROOT, check=True)
    try:
        tput = blocks(
            "node_throughput.py", ["--seconds", f"{args.seconds:g}", "--rates"], args.throughput_blocks, base_tree
        )
        prop = blocks("node_propagation.py", ["--count", str(args.count)], args.blocks, base_tree)
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
        f"--blocks {args.blocks} --count {args.count} --throughput-blocks {args.throughput_blocks} "
        f"--seconds {args.seconds:g}`: per block, node_throughput.py --seconds {args.seconds:g} --rates (closed "
        f"loop only) and node_propagation.py --count {args.count} for new and base one right after the other; load "
        "= 1-minute load average at the start of each run, steal = CPU steal share during it\n\n"
        f"{t_table}\n\n{p_table}\n\n{p90_table}\n"
    )
    old = RESULTS.read_text()
    head, sep, rest = old.partition("\n## ")
    RESULTS.write_text(head.rstrip("\n") + "\n\n" + section + (sep + rest if sep else ""))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
