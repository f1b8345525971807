"""Remote testbeds: a topology whose devices are all real (`kind: ssh`), reached over SSH.

    plan = plan_remote_testbed(topology, "r1", state_dir=..., known_hosts=...)   # pure
    state = bring_up(plan, topology)        # state + journal; host keys and capabilities

Nothing is created on this machine but the testbed's state directory (meta.json, plan.json,
links.json, resources.jsonl, devices.json): no namespaces, no veths, no processes. `up` connects
to every device (bounded parallelism), checks or learns its host key in the fleet's known_hosts
(`~/.local/state/cnlab/fleets/<topology>/known_hosts`, kept across testbeds so a changed key is
noticed) and probes what faults it can carry (nft, tc, netem) into `devices.json`.

Links between real devices are physical: cnlab adds no impairment at `up` (the topology's delay,
loss or rate describe them and are not applied). Faults then change devices over SSH (the `ssh`
shaper, `remote_faults.py`), each journalled before it is made, so `down` undoes it.

A testbed is either emulated or remote: a topology mixing both kinds is refused (exit 2).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import InputError, RunError
from ..targets.ssh import KnownHosts, SshEndpoint, SshTarget, for_each, scan_host_key
from ..topology.model import Direction, Topology
from . import naming
from .plan import DevicePlan, LinkEnd, LinkPlan, TestbedPlan
from .remote_faults import Capabilities, RemoteCommand, nft_command, tc_command
from .state import TestbedState

DEVICES_FILE = "devices.json"  # per device: what the capability probe found
FAULTS_FILE = "faults.json"  # the faults devices carry now (remote_faults.FaultState)
MAX_PARALLEL = 10

# Which link faults a device can carry. netem: tried in a throwaway network namespace (nothing
# on the device changes), else read from the kernel's module lists. Each line KEY=VALUE.
NETEM_PROBE = r"""
if command -v tc >/dev/null && command -v unshare >/dev/null && \
   unshare -n sh -c 'tc qdisc add dev lo root netem delay 1ms' 2>/dev/null; then echo netem=yes
elif [ -d "/lib/modules/$(uname -r)" ]; then
  if grep -qs sch_netem "/lib/modules/$(uname -r)/modules.builtin" "/lib/modules/$(uname -r)/modules.dep"; then
    echo netem=yes; else echo netem=no; fi
elif command -v tc >/dev/null && command -v unshare >/dev/null; then echo netem=no
else echo netem=unknown; fi
"""
NFT_TC_PROBE = r"""
if command -v nft >/dev/null && nft list tables >/dev/null 2>&1; then echo nft=yes; else echo nft=no; fi
if command -v tc >/dev/null; then echo tc=yes; else echo tc=no; fi
"""
CAPABILITY_PROBE = NFT_TC_PROBE + NETEM_PROBE


def parse_capabilities(text: str) -> Capabilities:
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return Capabilities(nft=kv.get("nft") == "yes", tc=kv.get("tc") == "yes", netem=kv.get("netem", "unknown"))


def fleet_dir(topology_name: str) -> Path:
    """Where cnlab keeps the known_hosts of a topology's real devices (it outlives /run)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cnlab" / "fleets" / topology_name


def fleet_known_hosts(topology_name: str) -> str:
    return str(fleet_dir(topology_name) / "known_hosts")


def is_remote(topo: Topology) -> bool:
    """True when every device is `kind: ssh`; InputError (exit 2) when the kinds are mixed."""
    kinds: dict[str, list[str]] = {}
    for d in topo.devices.values():
        kinds.setdefault(d.kind, []).append(d.name)
    if len(kinds) > 1:
        shown = "; ".join(f"{k}: {', '.join(v[:3])}{', ...' if len(v) > 3 else ''}" for k, v in sorted(kinds.items()))
        raise InputError(
            f"topology {topo.name!r} mixes emulated and ssh devices ({shown}): a testbed is either emulated "
            "(namespaces on this machine) or remote (every device `kind: ssh`); split the topology in two"
        )
    return set(kinds) == {"ssh"}


def plan_remote_testbed(topo: Topology, testbed_id: str, *, state_dir: str, known_hosts: str) -> TestbedPlan:
    """The plan of a remote testbed: devices with their SSH endpoints, links as the topology has
    them (unimpaired). Pure."""
    tid = naming.check_id(testbed_id)
    if not topo.devices:
        raise InputError(f"topology {topo.name!r} has no devices")
    devices: dict[str, DevicePlan] = {}
    for i, dev in enumerate(topo.devices.values()):
        assert dev.ssh is not None  # the loader gives every ssh device its target
        devices[dev.name] = DevicePlan(
            name=dev.name,
            index=i,
            netns="",
            site=dev.site,
            mgmt_peer="",
            mgmt_addr=dev.ssh.host,
            service_v4=dev.ssh.host,
            service_v6="",
            cgroup=None,
            deploy="ansible",
            kind="ssh",
            ssh=asdict(dev.ssh),
        )
    links = []
    for k, link in enumerate(topo.links):
        if link.a not in devices or link.b not in devices:
            raise InputError(f"link {link.a}~{link.b} names an unknown device")
        ends = [LinkEnd(d, "", "", devices[d].mgmt_addr, "", None) for d in (link.a, link.b)]
        links.append(
            LinkPlan(
                index=k,
                id=f"{link.a}~{link.b}",
                a=ends[0],
                b=ends[1],
                forward=Direction(),
                reverse=Direction(),
                up=link.up,
                routed=link.up,
            )
        )
    return TestbedPlan(
        id=tid,
        topology=topo.name,
        shaper="ssh",
        routing="device",
        ipv6=False,
        state_dir=state_dir,
        mgmt_subnet="",
        bridge="",
        bridge_addr="",
        devices=devices,
        links=links,
        wire_netns=None,
        wire_shards=[],
        seed=0,
        kind="remote",
        known_hosts=known_hosts,
    )


def remote_summary(plan: TestbedPlan) -> str:
    lines = [
        f"testbed {plan.id}: topology {plan.topology} (remote: {len(plan.devices)} real devices over SSH)",
        "  nothing is created on this machine but the state directory; links are not impaired at up",
        f"  host keys: {plan.known_hosts} (pins from the topology, else learned on first contact)",
        f"  faults: nft (link down) and tc netem (delay, loss, rate) on the devices, journalled; links: {len(plan.links)}",
        f"  state: {plan.state_dir}",
    ]
    for d in plan.devices.values():
        ssh = d.ssh or {}
        extra = "".join(
            [
                f" pinned {ssh['host_key']}" if ssh.get("host_key") else "",
                " become" if ssh.get("become") else "",
                f" root {ssh['root']}" if ssh.get("root") else "",
            ]
        )
        lines.append(f"  {d.name:<12} {ssh.get('user')}@{ssh.get('host')}:{ssh.get('port')}{extra}")
    return "\n".join(lines)


def endpoint(plan: TestbedPlan, device: str) -> SshEndpoint:
    d = plan.devices[device]
    if d.ssh is None:
        raise InputError(f"device {device} of testbed {plan.id} is not a real device (kind: ssh)")
    s = d.ssh
    return SshEndpoint(
        name=device,
        host=s["host"],
        port=int(s["port"]),
        user=s["user"],
        key_file=s.get("key"),
        host_key=s.get("host_key"),
        become=bool(s.get("become")),
    )


def run_on(plan: TestbedPlan, device: str, cmd: RemoteCommand, timeout_s: float = 60) -> str:
    """Run a command on a real device (through sudo if it says `become`); RunError names it."""
    with SshTarget(endpoint(plan, device), KnownHosts(plan.known_hosts)) as t:
        return t.run(cmd.argv, input=cmd.input or None, timeout_s=timeout_s).stdout


def probe_devices(plan: TestbedPlan, max_parallel: int = MAX_PARALLEL) -> dict[str, Capabilities | BaseException]:
    """Host key (checked or learned) and fault capabilities of every device, in parallel."""
    known = KnownHosts(plan.known_hosts)

    def one(device: str) -> Capabilities:
        scan_host_key(endpoint(plan, device), known)
        return parse_capabilities(run_on(plan, device, RemoteCommand(["sh", "-c", CAPABILITY_PROBE]), timeout_s=30))

    return dict(for_each(list(plan.devices), one, max_parallel))


def capabilities(state: TestbedState) -> dict[str, Capabilities]:
    raw = state.read(DEVICES_FILE, {})
    return {k: Capabilities(**v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def bring_up(plan: TestbedPlan, progress: Any = None) -> TestbedState:
    """The state of a remote testbed, once every device answered with the expected host key.
    On failure the state is removed again (nothing was changed on any device)."""
    say = progress or (lambda what, done, total: None)
    t0 = time.monotonic()
    state = TestbedState(plan.id)
    try:
        state.create()
    except PermissionError as e:
        raise RunError(f"cannot create the testbed state ({e}): run as root or set CNLAB_STATE_DIR") from None
    try:
        state.update_meta(**plan.creating_meta())
        state.write_text("plan.json", plan.to_json(routes=False))
        Path(plan.known_hosts).parent.mkdir(parents=True, exist_ok=True)
        say("host keys and capabilities", 0, len(plan.devices))
        found = probe_devices(plan)
        failed = {d: r for d, r in found.items() if isinstance(r, BaseException)}
        if failed:
            raise RunError(
                f"{len(failed)} of {len(found)} devices did not answer as expected, testbed not created:\n  "
                + "\n  ".join(str(e) for e in list(failed.values())[:10])
            )
        state.write(DEVICES_FILE, {d: asdict(c) for d, c in found.items() if isinstance(c, Capabilities)})
        say("host keys and capabilities", len(plan.devices), len(plan.devices))
        state.update_meta(phase="up", up_s=round(time.monotonic() - t0, 2))
    except BaseException:
        state.remove()
        raise
    return state


def undo_faults(state: TestbedState, rows: list[dict[str, Any]], plan: TestbedPlan) -> None:
    """`down`'s part on real devices: remove every nft table and tc tree the journal lists.
    RunError (the state is kept, `down` can be run again) naming what could not be removed."""
    work: dict[str, list[RemoteCommand]] = {}
    for r in rows:
        if r["kind"] == "remote-nft":
            work.setdefault(r["name"], []).append(nft_command([]))
        elif r["kind"] == "remote-tc":
            device, _, ifname = r["name"].partition("/")
            work.setdefault(device, []).append(tc_command(ifname, []))

    def one(device: str) -> None:
        for cmd in work[device]:
            run_on(plan, device, cmd)

    errors = [f"{d}: {r}" for d, r in for_each(sorted(work), one, MAX_PARALLEL) if isinstance(r, BaseException)]
    if errors:
        raise RunError(
            f"testbed {state.id}: faults left on devices (state kept in {state.dir}; run `cnlab down` again "
            "when they answer):\n  " + "\n  ".join(errors)
        )
