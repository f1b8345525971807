"""The Ansible inventory, built in Python from the federation plan: pure, printable, unit-tested.

Every host gets everything it needs as its own variables (paths under its root prefix, the node
config already rendered by the image's renderer, the controller paths of its secret files, its
health URL), so no template loops over other hosts (quadratic in Ansible, issue 36614) and
`ansible-playbook -i inventory.yml playbooks/site.yml` by hand does what `cnlab deploy` does.

Secrets are never values here: the signing key and admin token are files on the controller
(mode 0600) that the role copies with `no_log`; the inventory holds only their paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..targets.ssh import SshEndpoint, ssh_options

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
GROUP = "p2pvalue"
ServiceManager = str  # "systemd" | "procd" | "pidfile" | "auto"


@dataclass(frozen=True)
class NodeSpec:
    """One node as the federation plan has it (shared with the direct deployer)."""

    device: str
    domain: str
    listen: dict[str, dict[str, Any]]  # port name -> {host, port}
    trusted_peers: tuple[dict[str, str], ...]  # {domain, address, public_key}
    key_src: str  # controller path of the signing key (0600)
    admin_token_src: str  # controller path of the admin token (0600)
    health_url: str  # reachable from the controller (management network)
    values: dict[str, Any] = field(default_factory=dict)  # limits, federation, storage ...


@dataclass(frozen=True)
class AnsibleHost:
    node: NodeSpec
    endpoint: SshEndpoint
    root: str = ""  # a prefix for everything installed ("" on real devices)
    service_manager: ServiceManager = "auto"

    @property
    def name(self) -> str:
        return self.node.device


@dataclass(frozen=True)
class ArtifactRef:
    path: str
    version: str
    distribution: str


def device_paths(root: str) -> dict[str, str]:
    """The role's paths under a root prefix (the same defaults as roles/p2pvalue_node)."""
    base = f"{root}/opt/p2pvalue"
    config_dir = f"{root}/etc/p2pvalue"
    return {
        "p2pvalue_root": root,
        "p2pvalue_base": base,
        "p2pvalue_venv": f"{base}/venv",
        "p2pvalue_bin_dir": f"{base}/bin",
        "p2pvalue_config_dir": config_dir,
        "p2pvalue_config": f"{config_dir}/node.yaml",
        "p2pvalue_signing_key": f"{config_dir}/signing.key",
        "p2pvalue_admin_token_file": f"{config_dir}/admin.token",
        "p2pvalue_data_dir": f"{root}/var/lib/p2pvalue",
        "p2pvalue_log_dir": f"{root}/var/log/p2pvalue",
        "p2pvalue_run_dir": f"{root}/run/p2pvalue",
    }


def config_values(host: AnsibleHost) -> dict[str, Any]:
    """The values the image's renderer gets for this host: the plan's, with the device's paths."""
    paths = device_paths(host.root)
    return {
        **host.node.values,
        "domain": host.node.domain,
        "listen": host.node.listen,
        "data_dir": paths["p2pvalue_data_dir"],
        "signing_key": paths["p2pvalue_signing_key"],
        "admin_token_file": paths["p2pvalue_admin_token_file"],
        "trusted_peers": [dict(p) for p in host.node.trusted_peers],
    }


class Unsafe(str):
    """A string Ansible must not template (dumped with YAML's `!unsafe` tag)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data), style="|"))


def build_inventory(
    hosts: list[AnsibleHost],
    *,
    artifact: ArtifactRef,
    known_hosts: str,
    render: Callable[[dict[str, Any]], str],
    node_exporter: bool = False,
    python: str = "/usr/bin/python3",
    pipelining: bool = True,
) -> dict[str, Any]:
    """The inventory as data (YAML inventory format)."""
    host_vars: dict[str, dict[str, Any]] = {}
    for h in sorted(hosts, key=lambda x: x.name):
        ep = h.endpoint
        v: dict[str, Any] = {"ansible_host": ep.host, "ansible_port": ep.port, "ansible_user": ep.user}
        if ep.key_file:
            v["ansible_ssh_private_key_file"] = ep.key_file
        if ep.become:
            v["ansible_become"] = True
        v.update(device_paths(h.root))
        v.update(
            {
                "p2pvalue_domain": h.node.domain,
                "p2pvalue_service_manager": h.service_manager,
                "p2pvalue_config_text": Unsafe(render(config_values(h))),
                "p2pvalue_signing_key_src": h.node.key_src,
                "p2pvalue_admin_token_src": h.node.admin_token_src,
                "p2pvalue_health_url": h.node.health_url,
            }
        )
        if node_exporter:
            v["node_exporter_listen"] = f"{ep.host}:9100"
        host_vars[h.name] = v
    return {
        "all": {
            "vars": {
                # host keys: exactly the testbed's known_hosts (checked and learned by cnlab first)
                "ansible_ssh_common_args": " ".join(ssh_options(known_hosts)),
            },
            "children": {
                GROUP: {
                    "vars": {
                        "ansible_python_interpreter": python,
                        "ansible_pipelining": pipelining,
                        "p2pvalue_artifact": artifact.path,
                        "p2pvalue_version": artifact.version,
                        "p2pvalue_distribution": artifact.distribution,
                        "node_exporter_enabled": node_exporter,
                        "cnlab_federation_health_urls": [host_vars[n]["p2pvalue_health_url"] for n in host_vars],
                    },
                    "hosts": host_vars,
                }
            },
        }
    }


def inventory_yaml(inventory: dict[str, Any]) -> str:
    head = (
        "# Ansible inventory written by `cnlab inventory` (per-host variables built in Python).\n"
        f"#   ansible-playbook -i THIS_FILE {PLAYBOOKS}/site.yml\n"
    )
    return head + yaml.dump(inventory, Dumper=_Dumper, sort_keys=False, width=10_000)
