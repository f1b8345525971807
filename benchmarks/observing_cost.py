"""The cost of observing: one experiment run with its observers and without (`workload.observe:
false`), alternately, in the same benchmark run. Figures go to benchmarks/results/observing_cost.md.

    sudo flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/observing_cost.py experiments/demo.yaml --rounds 2

Observers are one WebSocket client per node subscribed to every object the node holds (issue 12):
every update is sent to them too. What that costs is read from each pair of runs:
- the workload's acknowledgement latency p50/p95 (summary.json), as users see it;
- the nodes' CPU, mean over the workload (warm-up included), from the run's metrics export
  (`node_cpu_s_per_s`; process-per-node deployments only: dense hosts have no process metrics);
- the CPU of the whole run (`cnlab run` and every process it reaped), for information only: a run
  without observers cannot tell when everything is visible, so it waits its whole quiesce_s.
The "off" variant is a copy of the experiment, next to it (relative paths keep working), with
`workload.observe: false`; it is removed afterwards.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_machine import append_results, describe  # noqa: E402
from experiment_run import run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "observing_cost.md"
FIGURES = ("latency_p50_s", "latency_p95_s", "acknowledged_updates", "availability", "lost_updates")


def workload_window(run_dir: Path, warmup_s: float, duration_s: float) -> tuple[float, float]:
    """Unix start and end of the workload (warm-up included), from the history's start note."""
    with open(run_dir / "history.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("event") == "workload_start":
                return rec["wall"], rec["wall"] + warmup_s + duration_s
    raise RuntimeError(f"{run_dir}: no workload_start in history.jsonl")


def mean_node_cpu(run_dir: Path, start: float, end: float) -> float | None:
    path = run_dir / "metrics" / "node_cpu_s_per_s.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        values = [float(r["value"]) for r in csv.DictReader(f) if start <= float(r["timestamp"]) <= end]
    return round(statistics.fmean(values), 4) if values else None


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def one_run(experiment: Path, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    def inspect(run_dir: Path) -> dict[str, Any]:
        start, end = workload_window(run_dir, float(spec.get("warmup_s", 0)), float(spec["duration_s"]))
        return {"node_cpu_s_per_s": mean_node_cpu(run_dir, start, end)}

    cpu0 = children_cpu_s()
    figures = run(experiment, timeout_s, inspect)
    figures["run_cpu_s"] = round(children_cpu_s() - cpu0, 1)
    return figures


def ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path, nargs="?", default=REPO / "experiments" / "demo.yaml")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs (on/off, then off/on, ...)")
    ap.add_argument("--timeout-s", type=float, default=900, help="per run")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    experiment = args.experiment.resolve()
    spec = yaml.safe_load(experiment.read_text())
    off_path = experiment.with_name(f".{experiment.stem}-observe-off-{os.getpid()}.yaml")
    off_spec = {**spec, "workload": {**spec["workload"], "observe": False}}
    off_path.write_text(yaml.safe_dump(off_spec, sort_keys=False))
    machine = describe()
    rows: list[tuple[int, str, dict[str, Any]]] = []
    try:
        for r in range(args.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for variant in order:
                figures = one_run(experiment if variant == "on" else off_path, spec, args.timeout_s)
                print(json.dumps({"round": r + 1, "observers": variant, **figures}), flush=True)
                rows.append((r + 1, variant, figures))
    finally:
        off_path.unlink(missing_ok=True)
    if args.no_write:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M+00:00")
    cols = ("verdict", *FIGURES, "node_cpu_s_per_s", "run_cpu_s", "wall_s")
    lines = [
        f"\n## {experiment.name}, {when} (commit {commit.stdout.strip()})\n",
        f"Machine: {machine}.\n",
        f"Command: `benchmarks/observing_cost.py {args.experiment} --rounds {args.rounds}`\n",
        "| round | observers | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
        *(f"| {r} | {v} | " + " | ".join(str(f.get(c)) for c in cols) + " |" for r, v, f in rows),
        "",
        "With observers ÷ without, per round:\n",
        "| round | latency p50 | latency p95 | node CPU |",
        "|---|---|---|---|",
    ]
    for r in range(1, args.rounds + 1):
        on = next(f for rr, v, f in rows if rr == r and v == "on")
        off = next(f for rr, v, f in rows if rr == r and v == "off")
        lines.append(
            f"| {r} | {ratio(on['latency_p50_s'], off['latency_p50_s'])} | "
            f"{ratio(on['latency_p95_s'], off['latency_p95_s'])} | "
            f"{ratio(on['node_cpu_s_per_s'], off['node_cpu_s_per_s'])} |"
        )
    append_results(
        RESULTS,
        "# The cost of observing\n\n`benchmarks/observing_cost.py` (issue 12): the same experiment with "
        "and without its observers, alternately in one benchmark run.\n",
        lines,
    )


if __name__ == "__main__":
    main()
