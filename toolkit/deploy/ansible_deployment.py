"""A federation deployed with Ansible, as the experiment runner and its workload see a deployment
(the same small API as `toolkit.deploy.deployment.Deployment`): the nodes of the shared federation
plan, where clients reach them (the devices' management addresses), their admin tokens, and node
stop/start/restart through each device's service manager.

    dep = AnsibleDeployment.deploy(tb, topology, progress=cb)  # the roles, through ansible-runner
    dep.client_url("r1"); dep.admin_token("r1")                 # what the workload needs
    dep.restart("r1")                                           # `cnlab node restart ID r1`
    dep.collect_logs(out_dir)                                   # `cnlab collect ID --out DIR`
    dep.remove()                                                # the cleanup role (`cnlab down`)

Only what the service manager can do is offered: `OPS` (stop, start, restart). A SIGKILL or
SIGSTOP of one node, and a device reboot, are emulated-testbed faults (`NODE_ACTIONS_REFUSED`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..testbed.testbed import Testbed
from .plan import FederationPlan, NodePlan
from .remote_service import OPS, RemoteNodes

# (what, done, total): the task Ansible works on and how many hosts finished it
Progress = Callable[[str, int, int], None]

NODE_ACTIONS = OPS
NODE_ACTIONS_REFUSED = {
    "kill": "a SIGKILL of the node alone is an emulated-testbed fault (on a real device its service "
    "manager restarts a crashed node at once)",
    "pause": "freezing one node (SIGSTOP) is an emulated-testbed fault",
    "resume": "freezing one node (SIGSTOP) is an emulated-testbed fault",
}
DEVICE_ACTIONS_REFUSED = {"reboot": "cnlab does not reboot real hardware"}


@dataclass
class AnsibleDeployment:
    testbed: Testbed
    plan: FederationPlan
    remote: RemoteNodes
    mode: str = "ansible"

    @classmethod
    def deploy(
        cls, tb: Testbed, topology: Any = None, *, artifact: Any = None, progress: Progress | None = None
    ) -> AnsibleDeployment:
        """What `cnlab deploy ID` does on a testbed of Ansible-deployed devices: the roles through
        ansible-runner, returning once every node answers its health check (the role waits).
        RunError naming host, task and message when a host fails."""
        from ..images.wheelhouse import build
        from .ansible import for_testbed
        from .direct import plan_for

        deployer = for_testbed(tb, topology)
        plan, manifest = plan_for(tb, topology=topology)
        art = artifact if artifact is not None else build(manifest.name)
        outcome = deployer.deploy(art, progress=_host_progress(len(deployer.hosts), progress))
        if not outcome.result.ok:
            raise RunError(
                "deploy with Ansible failed:\n  " + "\n  ".join(str(f) for f in outcome.result.failures[:20])
            )
        return cls.open(tb, topology, plan)

    @classmethod
    def open(cls, tb: Testbed, topology: Any = None, plan: FederationPlan | None = None) -> AnsibleDeployment:
        from .ansible_nodes import known_hosts_of, testbed_hosts
        from .direct import plan_for

        hosts, _ = testbed_hosts(tb, topology)
        if plan is None:
            plan, _ = plan_for(tb, topology=topology)
        names = {h.name for h in hosts}
        plan.nodes = {d: n for d, n in plan.nodes.items() if d in names}
        return cls(tb, plan, RemoteNodes({h.name: h for h in hosts}, known_hosts_of(tb), tb.state.dir))

    # ---- what a client needs (as Deployment) ----------------------------------------------------
    @property
    def nodes(self) -> dict[str, NodePlan]:
        return self.plan.nodes

    def client_url(self, device: str) -> str:
        return self.plan.nodes[device].client_url

    def admin_token(self, device: str) -> str:
        return Path(self.plan.nodes[device].admin_token_path).read_text().strip()

    # ---- lifecycle through the service manager -------------------------------------------------
    def stop(self, device: str) -> None:
        self.remote.run("stop", device)

    def start(self, device: str) -> None:
        self.remote.run("start", device)

    def restart(self, device: str) -> None:
        self.remote.run("restart", device)

    # ---- logs and removal ----------------------------------------------------------------------
    def collect_logs(self, out: Path) -> list[str]:
        """Per node into out/<device>/ what `cnlab collect` fetches (log, database copy, config,
        journal excerpt); returns the errors, one per device that failed."""
        from .remote import Device, collect

        devices = [Device(h.endpoint, h.root) for h in self.remote.hosts.values()]
        return [f"{c.device}: {c.error}" for c in collect(devices, self.remote.known_hosts, out) if c.error]

    def remove(self) -> None:
        remove_nodes(self.testbed)


def _host_progress(n_hosts: int, progress: Progress | None) -> Callable[[str, str, str], None]:
    """The Ansible deployer's (host, task, status) events as (task, hosts done, hosts)."""
    done: dict[str, set[str]] = {}

    def update(host: str, task: str, status: str) -> None:
        if progress is None:
            return
        if not host:
            progress(task, 0, n_hosts)
        elif status in ("ok", "changed", "skipped", "failed", "unreachable"):
            hosts = done.setdefault(task, set())
            hosts.add(host)
            progress(task, len(hosts), n_hosts)

    return update


def remove_nodes(tb: Testbed) -> None:
    """The cleanup role on every device of a remote testbed whose nodes were deployed (nodes
    stopped, installation and data removed), as `cnlab down` does first; RunError naming what
    failed (the testbed is kept, so `cnlab down` can try again)."""
    from .ansible import cleanup_remote

    result = cleanup_remote(tb)
    if result is not None and not result.ok:
        raise RunError(
            f"removing the nodes from testbed {tb.id}'s devices failed (testbed kept; run `cnlab down "
            f"{tb.id}` again):\n  " + "\n  ".join(str(f) for f in result.failures[:20])
        )
