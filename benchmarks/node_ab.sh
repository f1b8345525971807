#!/usr/bin/env bash
# Issue 10's A/B: the node's throughput and propagation, this tree (new) against the node of main
# when the issue was filed (77e41dd, /tmp/nh-base), alternating, same harness (this tree's scripts).
set -u
cd /work/main
out=/work/logs/node_ab.out
: > $out
for round in 1 2; do
  for v in new base; do
    if [ $v = base ]; then export PYTHONPATH=/tmp/nh-base/node_images/p2pvalue; else unset PYTHONPATH; fi
    echo "== round $round $v throughput load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out
    timeout 300 .venv/bin/python benchmarks/node_throughput.py --seconds 10 --rates >> $out 2>&1
    echo "== round $round $v propagation load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out
    timeout 300 .venv/bin/python benchmarks/node_propagation.py --count 300 >> $out 2>&1
  done
done
echo "== done $(date +%T)" >> $out
