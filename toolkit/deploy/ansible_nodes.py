"""The nodes the Ansible deployer installs on a testbed, and how it reaches their devices.

Nodes come from the federation plan the direct deployer uses too (`toolkit.deploy.direct.plan_for`:
domains, listen addresses, trusted peers with their public keys, the config rendered by the
image's own renderer). The Ansible deployer renders that same config again with one change, the
paths: a device's files live under its root prefix. Keys and admin tokens are the plan's files on
the controller (`<state>/nodes/<device>/`, mode 0600), which the role copies.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import InputError
from ..targets.ssh import SshEndpoint
from ..testbed import remote, sshd
from ..testbed.testbed import Testbed
from .inventory import AnsibleHost, NodeSpec

PATH_VALUES = ("data_dir", "signing_key", "admin_token_file", "admin_token")

if TYPE_CHECKING:
    from .remote import Device


def ensure_admin_token(path: str) -> str:
    """The node's admin token file (0600), created on first use and kept afterwards."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return str(p)


def ansible_devices(tb: Testbed) -> list[str]:
    return [d.name for d in tb.plan.ssh_devices()]


def testbed_hosts(tb: Testbed, topology: Any = None) -> tuple[list[AnsibleHost], Any]:
    """Every `deploy: ansible` device of the testbed as an Ansible host with its node, and the
    image manifest (whose renderer the inventory uses)."""
    from .direct import plan_for

    names = ansible_devices(tb)
    if not names:
        raise InputError(
            f"testbed {tb.id} has no devices deployed with Ansible: mark devices "
            "`deploy: ansible` (emulated) or `kind: ssh` in the topology"
        )
    plan, manifest = plan_for(tb, topology=topology)
    hosts = []
    for n in names:
        node = plan.nodes.get(n)
        if node is None:
            continue  # not in the federation
        values = {k: v for k, v in yaml.safe_load(node.config_text).items() if k not in PATH_VALUES}
        spec = NodeSpec(
            device=n,
            domain=node.domain,
            listen=values.pop("listen"),
            trusted_peers=tuple(values.pop("trusted_peers") or ()),
            key_src=node.key_path,
            admin_token_src=ensure_admin_token(node.admin_token_path),
            health_url=f"http://{node.mgmt_addr}:{node.client_port}{plan.health_path}",
            values={k: v for k, v in values.items() if k != "domain"},
        )
        hosts.append(ansible_host(tb, n, spec))
    return hosts, manifest


def ansible_host(tb: Testbed, device: str, spec: NodeSpec) -> AnsibleHost:
    """A real device as its topology says (its own root, its service manager found by the role);
    an emulated one through its sshd, under its root prefix in the state dir, pidfile-supervised."""
    dp = tb.plan.devices[device]
    if dp.kind == "ssh":
        root = str((dp.ssh or {}).get("root") or "")
        return AnsibleHost(node=spec, endpoint=remote.endpoint(tb.plan, device), root=root, service_manager="auto")
    state_dir = str(tb.state.dir)
    ep = SshEndpoint(name=device, host=dp.mgmt_addr.split("/")[0], key_file=sshd.client_key(state_dir))
    return AnsibleHost(node=spec, endpoint=ep, root=sshd.device_root(state_dir, device), service_manager="pidfile")


def known_hosts_of(tb: Testbed) -> str:
    """The known_hosts Ansible and paramiko trust: the fleet's for real devices (kept across
    testbeds), the testbed's own for emulated devices (their host keys are made per testbed)."""
    return tb.plan.known_hosts if tb.plan.kind == "remote" else sshd.known_hosts(str(tb.state.dir))


def ssh_devices_of_topology(path: Path) -> tuple[list[Device], str]:
    """(devices, known_hosts) of a topology file's `kind: ssh` devices."""
    from ..topology.loader import load_topology
    from .remote import Device

    topo = load_topology(path)
    devices = [
        Device(
            SshEndpoint(
                name=d.name,
                host=d.ssh.host,
                port=d.ssh.port,
                user=d.ssh.user,
                key_file=d.ssh.key,
                host_key=d.ssh.host_key,
                become=d.ssh.become,
            )
        )
        for d in topo.devices.values()
        if d.kind == "ssh" and d.ssh is not None
    ]
    if not devices:
        raise InputError(f"{path}: no devices of kind ssh (emulated devices: give a testbed id instead)")
    known = remote.fleet_dir(topo.name) / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    return devices, str(known)
