#!/usr/bin/env bash
# The main job on the built-in example (`make demo`): run experiments/demo.yaml — bring the
# 12-device two-site community network up as an emulated testbed, deploy a P2Pvalue node on every
# device, start Prometheus, drive a community of 60 users while the two sites are cut apart and
# healed, check that nothing was lost and that replicas converged, write the run directory with
# report.html, and take everything down. KEEP=1 leaves the testbed up (`cnlab down ID` removes it).
set -uo pipefail
cd "$(dirname "$0")/.."
CNLAB=${CNLAB:-.venv/bin/cnlab}
EXPERIMENT=${1:-experiments/demo.yaml}
ARGS=()
[ "${KEEP:-0}" = 1 ] && ARGS+=(--keep)

echo "\$ cnlab run $EXPERIMENT ${ARGS[*]:-}"
"$CNLAB" run "$EXPERIMENT" "${ARGS[@]}"
rc=$?
latest=$(ls -1d runs/*-"$(sed -n 's/^name: *//p' "$EXPERIMENT" | head -1)" 2>/dev/null | tail -1)
if [ -n "$latest" ]; then
  echo
  echo "run directory: $latest"
  echo "report:        $latest/report.html   (open it in a browser; it works offline)"
  echo "past runs:     .venv/bin/cnlab runs"
fi
exit $rc
