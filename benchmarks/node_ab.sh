#!/usr/bin/env bash
# Issue 10's A/B of the node against a base commit (default 77e41dd), in short alternating blocks of
# the same run; see benchmarks/node_ab.py. Run it under the benchmark lock:
#   flock /tmp/cnlab-bench.lock benchmarks/node_ab.sh [BASE_COMMIT] [node_ab.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
base_commit=${1:-77e41dd}
shift || true
exec .venv/bin/python benchmarks/node_ab.py --base "$base_commit" "$@"
