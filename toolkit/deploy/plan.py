"""The federation planner: topology × testbed plan × image manifest -> one plan per node. Pure:
it reads its arguments (keys are passed in, generated beforehand by `keys.ensure_keys`), renders
each node's config with the image's own renderer, and touches nothing, so it is unit-tested
without root and printed by `cnlab deploy --dry-run`.

Where a node listens (inside its device's network namespace, which holds only 198.18.0.0/15
addresses and loopback):
- the image's health port (p2pvalue: the client API) binds 0.0.0.0 *in the namespace*: the
  toolkit's health checks and workload clients reach it from the root namespace at
  `http://<mgmt_addr>:<port>`, and nodes on other devices at the service address;
- other data-plane ports (p2pvalue: federation) bind the device's service address (the shaped
  data plane: federation traffic crosses the emulated links);
- management-plane ports (metrics) bind the management address (never shaped).

Files of a node live under `<state_dir>/nodes/<device>/`: `node.yaml`, `signing.key` (0600),
`admin.token` (0600), `node.log`, `data/`. `cnlab down` removes the state dir with the testbed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ..errors import InputError
from ..images.manifest import ImageManifest
from ..testbed.plan import TestbedPlan
from ..topology.model import Federation, Topology

Mode = Literal["fork", "dense"]
RESERVED_VALUES = {
    "domain",
    "listen",
    "data_dir",
    "signing_key",
    "admin_token_file",
    "admin_token",
    "trusted_peers",
    "limits",
}


@dataclass
class NodePlan:
    device: str
    domain: str
    image: str
    site: str | None
    netns: str
    cgroup_tasks: list[str]  # files the node process writes its pid to (empty: no limits)
    service_addr: str  # data plane (shaped), without prefix length
    mgmt_addr: str  # management network (never shaped)
    client_port: int
    federation_port: int
    metrics_port: int
    listen: dict[str, dict[str, Any]]  # port name -> {host, port}, as rendered into the config
    node_dir: str
    data_dir: str
    config_path: str
    log_path: str
    key_path: str
    admin_token_path: str
    public_key: str
    trusted_peers: list[str]  # domains
    accounts: list[str]
    group: int  # the launcher child hosting it: one per node (fork), one per N nodes (dense)
    config_text: str = ""

    @property
    def client_url(self) -> str:
        return f"http://{self.mgmt_addr}:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.mgmt_addr}:{self.metrics_port}"

    @property
    def federation_url(self) -> str:
        return f"http://{self.service_addr}:{self.federation_port}"


@dataclass
class FederationPlan:
    testbed_id: str
    topology: str
    image: str
    image_version: str
    image_dir: str
    mode: Mode
    nodes_per_process: int | None
    trust: str
    state_dir: str
    launcher_socket: str
    launcher_log: str
    launcher_spec: str
    health_path: str
    metrics_path: str
    nodes: dict[str, NodePlan] = field(default_factory=dict)

    def groups(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for n in self.nodes.values():
            out.setdefault(n.group, []).append(n.device)
        return out

    def trust_pairs(self) -> int:
        return sum(len(n.trusted_peers) for n in self.nodes.values()) // 2

    def to_dict(self, configs: bool = False) -> dict[str, Any]:
        """Plain data; without configs (they are in each node's config file) it is much smaller."""
        if configs:
            return asdict(self)
        return asdict(replace(self, nodes={k: replace(n, config_text="") for k, n in self.nodes.items()}))

    def to_json(self, configs: bool = False) -> str:
        return json.dumps(self.to_dict(configs), indent=None if not configs else 1)

    @classmethod
    def from_json(cls, text: str) -> FederationPlan:
        raw = json.loads(text)
        nodes = {k: NodePlan(**v) for k, v in raw.pop("nodes").items()}
        return cls(**raw, nodes=nodes)

    def summary(self) -> str:
        per = f", {self.nodes_per_process} nodes per process" if self.mode == "dense" else ", one process per node"
        lines = [
            f"federation on testbed {self.testbed_id}: {len(self.nodes)} nodes of image "
            f"{self.image} {self.image_version}",
            f"  launcher: {self.mode} mode{per} ({len(self.groups())} children), control {self.launcher_socket}",
            f"  trust: {self.trust}, {self.trust_pairs()} trusting pairs",
            f"  files: {self.state_dir}/nodes/<device>/ (node.yaml, signing.key, admin.token, data/, node.log)",
        ]
        for n in self.nodes.values():
            lines.append(
                f"  {n.device:<12} {n.domain:<28} client {n.client_url}  federation {n.federation_url}  "
                f"metrics {n.metrics_url}  peers {len(n.trusted_peers)}  accounts {len(n.accounts)}"
            )
        return "\n".join(lines)


def node_dir(state_dir: str, device: str) -> str:
    return f"{state_dir}/nodes/{device}"


def key_path(state_dir: str, device: str) -> str:
    return f"{node_dir(state_dir, device)}/signing.key"


def domain_of(device: str, fed: Federation, topology: Topology) -> str:
    return f"{device}.{fed.domain_suffix or topology.name}"


def trust_sets(fed: Federation, topology: Topology) -> dict[str, set[str]]:
    """device -> the devices it trusts (symmetric). `site`: devices without a site form one group."""
    devices = list(fed.devices)
    out: dict[str, set[str]] = {d: set() for d in devices}
    if fed.trust == "all":
        for d in devices:
            out[d] = set(devices) - {d}
    elif fed.trust == "site":
        by_site: dict[str | None, list[str]] = {}
        for d in devices:
            by_site.setdefault(topology.devices[d].site, []).append(d)
        for members in by_site.values():
            for d in members:
                out[d] = set(members) - {d}
    for a, b in fed.trust_pairs:
        if a in out and b in out and a != b:
            out[a].add(b)
            out[b].add(a)
    return out


def launcher_files(state_dir: str) -> dict[str, str]:
    """The launcher's control socket, log and spec in the testbed's state directory."""
    return {
        "launcher_socket": f"{state_dir}/launcher.sock",
        "launcher_log": f"{state_dir}/launcher.log",
        "launcher_spec": f"{state_dir}/launcher.json",
    }


def plan_federation(
    topology: Topology,
    testbed_plan: TestbedPlan,
    manifest: ImageManifest,
    *,
    state_dir: str,
    keys: dict[str, str],
    nodes_per_process: int | None = None,
    federation: Federation | None = None,
) -> FederationPlan:
    """Plan every node of the topology's federation (or of `federation`, e.g. a default one).

    keys: device -> base64 ed25519 public key (every planned device needs one)."""
    fed = federation or topology.federation
    if fed is None:
        raise InputError(
            f"topology {topology.name!r} has no federation block: add `federation: {{image: p2pvalue, on: all}}`"
        )
    if fed.image != manifest.name:
        raise InputError(f"the federation wants image {fed.image!r} but the manifest is {manifest.name!r}")
    if nodes_per_process is not None and nodes_per_process < 1:
        raise InputError(f"--nodes-per-process must be at least 1 (got {nodes_per_process})")
    missing = [d for d in fed.devices if d not in testbed_plan.devices]
    if missing:
        raise InputError(f"federation devices not in testbed {testbed_plan.id}: {', '.join(missing[:5])}")
    clash = sorted(set(fed.settings) & RESERVED_VALUES)
    if clash:
        raise InputError(f"federation settings may not set {', '.join(clash)}: the deployer sets them")
    no_key = [d for d in fed.devices if d not in keys]
    if no_key:
        raise InputError(f"no public key for {', '.join(no_key[:5])}")

    ports = {name: p.default for name, p in manifest.ports.items()}
    for needed in ("client", "federation", "metrics"):
        manifest.port(needed)
    trusts = trust_sets(fed, topology)
    order = {d: testbed_plan.devices[d].index for d in fed.devices}
    domains = {d: domain_of(d, fed, topology) for d in fed.devices}
    mode: Mode = "dense" if nodes_per_process else "fork"

    def listen_host(port_name: str, service: str, mgmt: str) -> str:
        if port_name == manifest.health_port:
            return "0.0.0.0"  # in the device's namespace: its management and service addresses
        return mgmt if manifest.ports[port_name].plane == "management" else service

    addr = {d: testbed_plan.devices[d].service_v4.split("/")[0] for d in fed.devices}
    nodes: dict[str, NodePlan] = {}
    for i, device in enumerate(sorted(fed.devices, key=order.__getitem__)):
        dp = testbed_plan.devices[device]
        service, mgmt = addr[device], dp.mgmt_addr.split("/")[0]
        nd = node_dir(state_dir, device)
        listen = {name: {"host": listen_host(name, service, mgmt), "port": port} for name, port in ports.items()}
        peers = sorted(trusts[device], key=order.__getitem__)
        values: dict[str, Any] = {
            "domain": domains[device],
            "listen": listen,
            "data_dir": f"{nd}/data",
            "signing_key": key_path(state_dir, device),
            "admin_token_file": f"{nd}/admin.token",
            "trusted_peers": [
                {"domain": domains[p], "address": f"http://{addr[p]}:{ports['federation']}", "public_key": keys[p]}
                for p in peers
            ],
            "limits": dict(fed.limits),
            **fed.settings,
        }
        try:
            # The first config is checked here, so a mistake in the federation block fails the plan
            # with the image's message; the others differ only in names, addresses and peers, and
            # each node checks its own when it starts (a refused config is `fail_deploy`).
            text = manifest.render_config(values, check=i == 0)
        except Exception as e:  # the image's renderer names the field; say which node
            raise InputError(f"node {device}: the image's config renderer refused the values: {e}") from None
        nodes[device] = NodePlan(
            device=device,
            domain=domains[device],
            image=manifest.name,
            site=dp.site,
            netns=dp.netns,
            cgroup_tasks=list(dp.cgroup.tasks_files) if (dp.cgroup and mode == "fork") else [],
            service_addr=service,
            mgmt_addr=mgmt,
            client_port=ports["client"],
            federation_port=ports["federation"],
            metrics_port=ports["metrics"],
            listen=listen,
            node_dir=nd,
            data_dir=f"{nd}/data",
            config_path=f"{nd}/node.yaml",
            log_path=f"{nd}/node.log",
            key_path=key_path(state_dir, device),
            admin_token_path=f"{nd}/admin.token",
            public_key=keys[device],
            trusted_peers=[domains[p] for p in peers],
            accounts=list(fed.accounts),
            group=i // nodes_per_process if nodes_per_process else i,
            config_text=text,
        )
    return FederationPlan(
        testbed_id=testbed_plan.id,
        topology=topology.name,
        image=manifest.name,
        image_version=manifest.version,
        image_dir=str(manifest.dir),
        mode=mode,
        nodes_per_process=nodes_per_process,
        trust=fed.trust,
        state_dir=state_dir,
        **launcher_files(state_dir),
        health_path=manifest.health_path,
        metrics_path=manifest.metrics_path,
        nodes=nodes,
    )
