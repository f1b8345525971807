#!/usr/bin/env bash
# Issue 10's A/B: the node's throughput and propagation, this tree's node ("new") against another
# commit's node ("base", default 77e41dd: main when the issue was filed), in turn, two rounds, with
# this tree's benchmark scripts. Run it under the benchmark lock:
#   flock /tmp/cnlab-bench.lock benchmarks/node_ab.sh [BASE_COMMIT]
# The base is checked out in a temporary worktree and removed afterwards. Figures go to stdout
# (and, as every run of these scripts, to benchmarks/results/node_{throughput,propagation}.md).
set -euo pipefail
cd "$(dirname "$0")/.."
base_commit=${1:-77e41dd}
base=$(mktemp -d /tmp/cnlab-node-base.XXXXXX)
trap 'git worktree remove --force "$base" >/dev/null 2>&1 || rm -rf "$base"' EXIT
git worktree add --detach --force "$base" "$base_commit" >/dev/null
for round in 1 2; do
  for v in new base; do
    if [ "$v" = base ]; then export PYTHONPATH="$base/node_images/p2pvalue"; else unset PYTHONPATH; fi
    echo "== round $round $v throughput, load $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout 300 .venv/bin/python benchmarks/node_throughput.py --seconds 10 --rates
    echo "== round $round $v propagation, load $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout 300 .venv/bin/python benchmarks/node_propagation.py --count 300
  done
done
