"""Where an experiment runs, behind one small interface the runner talks to:

- `Emulated`: a testbed of network namespaces on this machine, nodes started by the direct
  deployer (fork or dense launcher); every timeline event works.
- `Remote`: real devices (every device `kind: ssh`) — `up` checks host keys and probes what
  faults each device can carry (as `cnlab up`), the nodes are deployed with Ansible (as
  `cnlab deploy`), link faults and partitions are nft/tc over SSH (the `ssh` shaper), node
  stop/start/restart go through the device's service manager, logs are fetched as `cnlab
  collect` does and the cleanup role runs before the testbed goes (as `cnlab down`).

What a platform cannot do is refused before anything starts, each at its place in the experiment
file (InputError, exit 2): `refusals` is pure (the loader calls it), `preflight` runs once the
testbed is up and its devices were probed (the runner calls it before deploying).

    platform = platform_for(topology)       # InputError when the topology mixes kinds
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputError, Problem
from ..topology.model import Topology
from .model import Experiment, TimelineEvent
from .schema import ExperimentSpec
from .timeline import Faults, TestbedFaults

if TYPE_CHECKING:
    from ..deploy.ansible_deployment import AnsibleDeployment
    from ..deploy.deployment import Deployment

# (what, done, total)
StepProgress = Callable[[str, int, int], None]
YamlPath = tuple[Any, ...]


class Nodes(Protocol):
    """A deployed federation as the runner needs it (Deployment, AnsibleDeployment)."""

    @property
    def mode(self) -> str: ...
    @property
    def nodes(self) -> dict[str, Any]: ...
    def client_url(self, device: str) -> str: ...
    def admin_token(self, device: str) -> str: ...


class Platform(Protocol):
    """One per run: it keeps the nodes it deployed."""

    name: str
    needs_root: bool  # emulated: namespaces on this machine; remote: only SSH from here

    def refusals(self, spec: ExperimentSpec) -> list[tuple[YamlPath, str]]: ...
    def preflight(self, testbed: Any, exp: Experiment) -> list[Problem]: ...
    def deploy(self, testbed: Any, exp: Experiment, progress: StepProgress) -> Nodes: ...
    def faults(self, testbed: Any) -> Faults: ...
    def collect_logs(self, out: Path) -> list[str]: ...
    def remove_nodes(self, testbed: Any) -> None: ...


def platform_for(topology: Topology) -> Platform:
    from ..testbed.remote import is_remote

    return Remote() if is_remote(topology) else Emulated()


def write_node_json(out: Path, device: str, node: Any) -> None:
    d = out / device
    d.mkdir(parents=True, exist_ok=True)
    info = {
        "device": device,
        "domain": node.domain,
        "site": node.site,
        "mgmt_addr": node.mgmt_addr,
        "client_port": node.client_port,
    }
    (d / "node.json").write_text(json.dumps(info, indent=1) + "\n")


class Emulated:
    name = "emulated"
    needs_root = True

    def __init__(self) -> None:
        self.deployment: Deployment | None = None

    def refusals(self, spec: ExperimentSpec) -> list[tuple[YamlPath, str]]:
        return []

    def preflight(self, testbed: Any, exp: Experiment) -> list[Problem]:
        return []

    def deploy(self, testbed: Any, exp: Experiment, progress: StepProgress) -> Nodes:
        from ..deploy.direct import deploy

        self.deployment = deploy(
            testbed, nodes_per_process=exp.federation.nodes_per_process, topology=exp.topology, progress=progress
        )
        return self.deployment

    def faults(self, testbed: Any) -> Faults:
        return TestbedFaults(testbed, self.deployment)

    def collect_logs(self, out: Path) -> list[str]:
        if self.deployment is None:
            return []
        for device, node in self.deployment.nodes.items():
            write_node_json(out, device, node)
            src = Path(node.log_path)
            if src.exists():
                shutil.copyfile(src, out / device / "node.log")
        return []

    def remove_nodes(self, testbed: Any) -> None:
        from ..deploy.deployment import Deployment

        if Deployment.exists(testbed.id):
            Deployment.open(testbed.id).shutdown()


class Remote:
    name = "remote"
    needs_root = False

    def __init__(self) -> None:
        self.deployment: AnsibleDeployment | None = None

    def refusals(self, spec: ExperimentSpec) -> list[tuple[YamlPath, str]]:
        from ..deploy.ansible_deployment import DEVICE_ACTIONS_REFUSED, NODE_ACTIONS, NODE_ACTIONS_REFUSED

        out: list[tuple[YamlPath, str]] = []
        if spec.federation.nodes_per_process is not None:
            out.append(
                (
                    ("federation", "nodes_per_process"),
                    "dense mode (nodes_per_process) is for emulated testbeds: on real devices (kind: ssh) "
                    "each device runs its own node, deployed with Ansible",
                )
            )
        for i, entry in enumerate(spec.timeline):
            if entry is None:
                continue
            if entry.node is not None and entry.node.action in NODE_ACTIONS_REFUSED:
                out.append(
                    (
                        ("timeline", i, "node", "action"),
                        f"event '{entry.name or 'node'}': node {entry.node.action} is not available on real "
                        f"devices (kind: ssh): {NODE_ACTIONS_REFUSED[entry.node.action]}; nodes deployed "
                        f"with Ansible {', '.join(NODE_ACTIONS)} through their service manager",
                    )
                )
            if entry.device is not None and entry.device.action in DEVICE_ACTIONS_REFUSED:
                out.append(
                    (
                        ("timeline", i, "device", "action"),
                        f"event '{entry.name or 'device'}': device {entry.device.action} is not available on "
                        f"real devices (kind: ssh): {DEVICE_ACTIONS_REFUSED[entry.device.action]} "
                        "(use `node: {action: restart}`)",
                    )
                )
        return out

    def preflight(self, testbed: Any, exp: Experiment) -> list[Problem]:
        """Every link fault of the timeline against what `up` probed on its devices (nft for a
        link down or a partition, tc and netem for delay, loss, rate) and their addresses."""
        from ..testbed.remote_faults import check_capable, ip_of

        caps = testbed.capabilities()
        problems: list[Problem] = []
        for event in exp.timeline:

            def at_event(exc: InputError, event: TimelineEvent = event) -> list[Problem]:
                return [
                    Problem(str(exp.source), event.line, event.col, f"event '{event.name}': {p.message}")
                    for p in exc.problems
                ]

            try:
                needs = self._needs(testbed, event)
            except InputError as exc:  # e.g. a partition whose groups leave one group
                problems += at_event(exc)
                continue
            for device, peer, fault, link_id in needs:
                try:
                    check_capable(device, caps.get(device), fault, link_id)
                    ip_of(peer, testbed.plan.devices[peer].mgmt_addr)
                except InputError as exc:
                    problems += at_event(exc)
        return sorted(set(problems))

    @staticmethod
    def _needs(testbed: Any, event: TimelineEvent) -> list[tuple[str, str, str, str]]:
        """(device, its peer, down | shape, link id) for each device end an event changes."""
        p = event.params
        plan = testbed.plan
        if event.kind == "partition":
            group_of = {m: i for i, g in enumerate(testbed.resolve_groups(p["groups"])) for m in g}
            cut = [lk for lk in plan.links if group_of[lk.a.device] != group_of[lk.b.device]]
            return [(e.device, o.device, "down", lk.id) for lk in cut for e, o in ((lk.a, lk.b), (lk.b, lk.a))]
        if event.kind == "link":
            a, b = p["between"]
            link = plan.link(a, b)
            if p.get("up") is not None:
                return [(a, b, "down", link.id), (b, a, "down", link.id)]
            ends = [(a, b)] if p.get("one_way") else [(a, b), (b, a)]
            return [(d, o, "shape", link.id) for d, o in ends]
        return []

    def deploy(self, testbed: Any, exp: Experiment, progress: StepProgress) -> Nodes:
        from ..deploy.ansible_deployment import AnsibleDeployment
        from ..deploy.direct import remember_federation

        remember_federation(testbed, exp.topology)  # as `cnlab up` does: `cnlab down` cleans these nodes
        self.deployment = AnsibleDeployment.deploy(testbed, exp.topology, progress=progress)
        return self.deployment

    def faults(self, testbed: Any) -> Faults:
        return TestbedFaults(testbed, self.deployment)

    def collect_logs(self, out: Path) -> list[str]:
        if self.deployment is None:
            return []
        errors = self.deployment.collect_logs(out)
        for device, node in self.deployment.nodes.items():
            write_node_json(out, device, node)
        return errors

    def remove_nodes(self, testbed: Any) -> None:
        from ..deploy.ansible_deployment import remove_nodes

        remove_nodes(testbed)  # also after a failed deploy: what `cnlab down` would remove
