#!/usr/bin/env bash
# The main job on the built-in example (`make demo`): bring the 12-device two-site community
# network up as an emulated testbed on this machine, show it working across shaped multi-hop
# links, cut the two sites apart and heal them, change a link while it runs, read the wire's
# per-link counters, and take everything down again. KEEP=1 leaves the testbed up.
set -euo pipefail
cd "$(dirname "$0")/.."
CNLAB=${CNLAB:-.venv/bin/cnlab}
TOPOLOGY=${1:-experiments/topologies/two-sites.yaml}
ID=${ID:-demo}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { echo "\$ cnlab $*"; "$CNLAB" "$@"; }

step "validate and describe the topology"
run validate "$TOPOLOGY"
run show "$TOPOLOGY"

if "$CNLAB" status "$ID" >/dev/null 2>&1; then
  step "a testbed '$ID' is still up from an earlier demo: taking it down first"
  run down "$ID"
fi

step "bring it up (namespaces, veths, management bridge, routes, cgroups, the wire shaper)"
run up "$TOPOLOGY" --id "$ID"
[ "${KEEP:-0}" = 1 ] || trap 'step "take it down"; "$CNLAB" down "$ID"' EXIT
run status "$ID"

step "ping from the far west edge to the far east edge, over mesh, backbone and mesh hops"
echo "(the first packets also wait for ARP hop by hop, over the same lossy, delayed links)"
run exec "$ID" w6 -- ping -c 10 -i 0.2 -w 6 e6

step "partition the sites: west to east fails, inside west still works"
run partition "$ID" --groups west,east
if "$CNLAB" exec "$ID" w1 -- ping -c 2 -W 1 e1 >/dev/null; then
  echo "unexpected: w1 reached e1 across the partition" >&2; exit 1
fi
echo "w1 -> e1: unreachable, as it should be"
run exec "$ID" w1 -- ping -c 2 -i 0.2 w4

step "heal, then slow the backbone down to 50 ms while it runs"
run heal "$ID"
run link set "$ID" w1 e1 --delay-ms 50
run exec "$ID" w1 -- ping -c 3 -i 0.2 e1

step "per-link, per-direction counters and release lateness of the wire"
run status "$ID" --links
