"""The nodes the Ansible deployer installs on a testbed, and how it reaches their devices.

Nodes come from the federation plan shared with the direct deployer (domains, listen addresses,
trusted peers with public keys); keys and admin tokens are files on the controller under
`<state>/nodes/<device>/` (mode 0600), which the role copies. Devices are reached over SSH: an
emulated `deploy: ansible` device at its management address with the testbed's client key and
its own root prefix under the state directory.
"""

from __future__ import annotations

import importlib
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..targets.ssh import SshEndpoint
from ..testbed import sshd
from ..testbed.testbed import Testbed
from .inventory import AnsibleHost, NodeSpec

REPO = Path(__file__).resolve().parents[2]


def image_manifest(image: str = "p2pvalue") -> dict[str, Any]:
    path = REPO / "node_images" / image / "image.yaml"
    if not path.exists():
        raise InputError(f"no image {image!r} ({path} is missing)")
    return yaml.safe_load(path.read_text())


def renderer(image: str = "p2pvalue"):
    """The image's own config renderer (image.yaml config.render), the direct deployer's too."""
    dotted = image_manifest(image)["config"]["render"]
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def node_dir(state_dir: str, device: str) -> str:
    return f"{state_dir}/nodes/{device}"


def ensure_secrets(state_dir: str, device: str) -> tuple[str, str, str]:
    """(key path, admin token path, public key): created 0600 on first use, kept afterwards."""
    from p2pvalue_node import keys  # the image's key format

    d = Path(node_dir(state_dir, device))
    d.mkdir(parents=True, exist_ok=True)
    key = d / "signing.key"
    if not key.exists():
        keys.write_key(keys.generate(), key)
    token = d / "admin.token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return str(key), str(token), keys.load_key(key).public_b64


def ansible_devices(tb: Testbed) -> list[str]:
    return [d.name for d in tb.plan.ssh_devices()]


def testbed_hosts(tb: Testbed, image: str = "p2pvalue") -> list[AnsibleHost]:
    """Every `deploy: ansible` device of the testbed as an Ansible host with its node."""
    names = ansible_devices(tb)
    if not names:
        raise InputError(f"testbed {tb.id} has no devices deployed with Ansible: mark devices "
                         "`deploy: ansible` (emulated) or `kind: ssh` in the topology")
    ports = {n: int(p["default"]) for n, p in image_manifest(image)["ports"].items()}
    state_dir = str(tb.state.dir)
    suffix = tb.plan.topology.lower().replace("_", "-")
    domains = {n: f"{n}.{suffix}" for n in names}
    creds = {n: ensure_secrets(state_dir, n) for n in names}
    service = {n: tb.address(n) for n in names}
    hosts = []
    for n in names:
        mgmt = tb.mgmt_address(n)
        listen = {"client": {"host": "0.0.0.0", "port": ports["client"]},  # in the namespace
                  "federation": {"host": service[n], "port": ports["federation"]},
                  "metrics": {"host": mgmt, "port": ports["metrics"]}}
        peers = tuple({"domain": domains[p], "address": f"http://{service[p]}:{ports['federation']}",
                       "public_key": creds[p][2]} for p in names if p != n)
        node = NodeSpec(device=n, domain=domains[n], listen=listen, trusted_peers=peers,
                        key_src=creds[n][0], admin_token_src=creds[n][1],
                        health_url=f"http://{mgmt}:{ports['client']}/health")
        ep = SshEndpoint(name=n, host=mgmt, port=22, user="root", key_file=sshd.client_key(state_dir))
        hosts.append(AnsibleHost(node=node, endpoint=ep, root=sshd.device_root(state_dir, n),
                                 service_manager="pidfile"))
    return hosts


def fleet_dir(topology_name: str) -> Path:
    """Where cnlab keeps the known_hosts of a topology's real devices (they outlive /run)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cnlab" / "fleets" / topology_name


def ssh_devices_of_topology(path: Path):
    """(devices, known_hosts) of a topology file's `kind: ssh` devices."""
    from ..topology import load_topology
    from .remote import Device

    topo = load_topology(path)
    devices = [Device(SshEndpoint(name=d.name, host=d.ssh.host, port=d.ssh.port, user=d.ssh.user,
                                  key_file=d.ssh.key, host_key=d.ssh.host_key, become=d.ssh.become))
               for d in topo.devices.values() if d.kind == "ssh" and d.ssh is not None]
    if not devices:
        raise InputError(f"{path}: no devices of kind ssh (emulated devices: give a testbed id instead)")
    known = fleet_dir(topo.name) / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    return devices, str(known)
