"""The testbed planner: a topology becomes a plan of namespaces, veths, addresses, routes, shaping
and cgroups. Pure: it reads its arguments and nothing else, so it is unit-tested without root.

The plan is plain dataclasses (`asdict()`-able, JSON-able). Its `phases()` are the exact commands
the executor runs, each step listing the resources it creates so the executor can journal them
before creating them. The executor makes no decisions.

Address plan (only 198.18.0.0/15 and fd00::/8; no default route anywhere):
- management: a block of 198.18.0.0/16 per testbed (the bridge has the first host address), so
  two testbeds side by side never overlap in the root namespace;
- service address of device i (on lo): 198.19.0.0/17 + i + 1 (/32) and fd00:c0::(i+1) (/128);
- link k: 198.19.128.0/17 + 2k (a side) and + 2k + 1 (b side), a /31; fd00:c1:k::1 and ::2 (/64).
Static routes: for every other device, its service address via the first hop of a shortest path
by configured delay, with `src` set to the own service address so replies find their way back.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np

from ..errors import InputError, RunError
from ..topology.model import Direction, Topology
from ..wire.spec import LinkSpec, WireSpec, parse_spec
from . import naming, routing
from .shapers import shaper_for
from .steps import Phase, Resource, Step

if TYPE_CHECKING:
    from ..targets.rtnl import RouteSpec

ShaperName = Literal["netem", "wire", "none", "ssh"]
Routing = Literal["static", "babeld", "device"]  # device: real devices route by themselves

MGMT_POOL = ipaddress.ip_network("198.18.0.0/16")
SERVICE_NET = ipaddress.ip_network("198.19.0.0/17")
LINK_NET = ipaddress.ip_network("198.19.128.0/17")
SERVICE_NET6 = ipaddress.ip_network("fd00:c0::/64")
LINK_NET6 = ipaddress.ip_network("fd00:c1::/32")
CPU_PERIOD_US = 100_000


@dataclass
class Route:
    dst: str
    via: str
    dev: str
    src: str


@dataclass
class CgroupPlan:
    dirs: list[str]  # created in order (parents first)
    settings: dict[str, str]  # file path -> value
    tasks_files: list[str]  # where a process writes its pid to join


@dataclass
class DevicePlan:
    name: str
    index: int
    netns: str
    site: str | None
    mgmt_peer: str
    mgmt_addr: str  # with prefix length
    service_v4: str
    service_v6: str
    cgroup: CgroupPlan | None
    routes: list[Route] = field(default_factory=list)
    routes6: list[Route] = field(default_factory=list)
    deploy: str = "direct"  # "ansible": the device runs an sshd on its management address
    kind: str = "emulated"  # "ssh": a real device (netns "", no cgroup; mgmt_addr is its SSH host)
    ssh: dict[str, Any] | None = None  # ssh devices: the topology's SshTarget fields


@dataclass
class LinkEnd:
    device: str
    netns: str
    ifname: str  # the end inside the device
    addr: str  # v4 with /31
    addr6: str  # v6 with /64
    wire_if: str | None  # its peer in the wire namespace (wire shaper)


@dataclass
class LinkPlan:
    index: int
    id: str  # "a~b"
    a: LinkEnd
    b: LinkEnd
    forward: Direction  # a -> b
    reverse: Direction  # b -> a
    up: bool
    routed: bool  # used by static routes (false when down at start)

    def end(self, device: str) -> LinkEnd:
        if device == self.a.device:
            return self.a
        if device == self.b.device:
            return self.b
        raise KeyError(device)

    def other(self, device: str) -> LinkEnd:
        return self.b if device == self.a.device else self.a


@dataclass
class WireShard:
    index: int
    netns: str
    spec: WireSpec  # what the wire process reads (its file is written once, by the plan's step)
    spec_path: str
    control_path: str
    log_path: str


@dataclass
class TestbedPlan:
    id: str
    topology: str
    shaper: ShaperName
    routing: Routing
    ipv6: bool
    state_dir: str
    mgmt_subnet: str
    bridge: str
    bridge_addr: str
    devices: dict[str, DevicePlan]
    links: list[LinkPlan]
    wire_netns: str | None
    wire_shards: list[WireShard]
    seed: int
    kind: str = "emulated"  # "remote": real devices over SSH (toolkit/testbed/remote.py)
    known_hosts: str = ""  # remote: the fleet's known_hosts file

    # ---- queries -------------------------------------------------------------------------------
    def creating_meta(self) -> dict[str, Any]:
        """The testbed's meta.json while it is being brought up (by this process)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "topology": self.topology,
            "shaper": self.shaper,
            "routing": self.routing,
            "phase": "creating",
            "pid": os.getpid(),
            "created": time.time(),
            "devices": len(self.devices),
            "links": len(self.links),
        }

    def namespaces(self) -> list[str]:
        names = [d.netns for d in self.devices.values() if d.netns]
        return names + ([self.wire_netns] if self.wire_netns else [])

    def link(self, a: str, b: str) -> LinkPlan:
        for link in self.links:
            if {link.a.device, link.b.device} == {a, b}:
                return link
        raise InputError(f"no link between {a!r} and {b!r} in testbed {self.id}")

    def link_by_id(self, link_id: str) -> LinkPlan:
        for link in self.links:
            if link.id == link_id:
                return link
        raise InputError(f"no link {link_id!r} in testbed {self.id}")

    def expected_routes(self) -> dict[str, int]:
        """Per device namespace: how many other devices it reaches over links up at start (what a
        converged routing daemon has a route for)."""
        return {self.devices[name].netns: len(island) - 1 for island in self.islands() for name in island}

    def islands(self, cut: frozenset[str] = frozenset()) -> list[list[str]]:
        """The sets of devices that reach each other over the routed links not in `cut` (link ids),
        largest first. A partition into groups can leave more islands than groups: a group whose
        members were joined only through another group falls apart."""
        g: nx.Graph[str] = nx.Graph()
        g.add_nodes_from(self.devices)
        g.add_edges_from((lk.a.device, lk.b.device) for lk in self.links if lk.routed and lk.id not in cut)
        return sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c))

    def hosts_file(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ""]
        for d in self.devices.values():
            lines.append(f"{d.service_v4.split('/')[0]}\t{d.name}")
            if self.ipv6:
                lines.append(f"{d.service_v6.split('/')[0]}\t{d.name}.v6")
            lines.append(f"{d.mgmt_addr.split('/')[0]}\t{d.name}.mgmt")
        return "\n".join(lines) + "\n"

    def to_dict(self, routes: bool = True) -> dict[str, Any]:
        """The plan as plain data. Without routes it is ~50x smaller: static routes are a pure
        function of devices and links (`static_routes()`), recomputed when needed."""
        if routes:
            return asdict(self)
        light = replace(self, devices={n: replace(d, routes=[], routes6=[]) for n, d in self.devices.items()})
        return asdict(light)

    def to_json(self, routes: bool = True) -> str:
        return json.dumps(self.to_dict(routes), indent=None if not routes else 1)

    def summary(self) -> str:
        if self.kind == "remote":
            from .remote import remote_summary

            return remote_summary(self)
        n_routes = sum(len(d.routes) + len(d.routes6) for d in self.devices.values())
        cg = sum(1 for d in self.devices.values() if d.cgroup)
        return "\n".join(
            [
                f"testbed {self.id}: topology {self.topology}",
                f"  devices: {len(self.devices)} namespaces cn{self.id}d<i>, links: {len(self.links)}",
                f"  shaper: {self.shaper}, routing: {self.routing}, ipv6: {self.ipv6}",
                f"  management: bridge {self.bridge} {self.bridge_addr} (subnet {self.mgmt_subnet})",
                f"  data plane: services {SERVICE_NET}, links {LINK_NET}, static routes: {n_routes}",
                f"  cgroups: {cg} devices with limits; wire processes: {len(self.wire_shards)}",
                f"  state: {self.state_dir}",
            ]
        )

    # ---- commands ------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        if self.kind == "remote":  # nothing is created on this machine; faults act at run time
            return []
        return [
            self._phase_files(),
            self._phase_namespaces(),
            self._phase_sysctl(),
            self._phase_mgmt(),
            self._phase_links(),
            self._phase_ends_up(),
            self._phase_addresses(),
            *shaper_for(self.shaper).phases(self),
            *([self._phase_babeld(), Phase("routes converge", [Step("converge")])] if self.routing == "babeld" else []),
            *self._phases_sshd(),
        ]

    def ssh_devices(self) -> list[DevicePlan]:
        """Devices deployed with Ansible: they run an sshd on their management address."""
        return [d for d in self.devices.values() if d.deploy == "ansible"]

    def _phases_sshd(self) -> list[Phase]:
        from . import sshd

        devs = self.ssh_devices()
        if not devs:
            return []
        sdir = sshd.ssh_dir(self.state_dir)
        keys = Phase(
            "ssh keys",
            [Step("sh", netns=devs[0].netns, lines=[sshd.keygen_script(self.state_dir, [d.name for d in devs])])],
        )
        steps = []
        for d in devs:
            paths = sshd.SshdPaths(sdir, d.name)
            config = sshd.sshd_config(
                listen=d.mgmt_addr.split("/")[0],
                port=22,
                host_key=paths.host_key,
                pid_file=paths.pid_file,
                authorized_keys=f"{sdir}/authorized_keys",
                home=paths.dir,
            )
            steps.append(
                Step(
                    "sshd",
                    netns=d.netns,
                    files={paths.config: config},
                    lines=[sshd.start_script(paths, d.cgroup.tasks_files if d.cgroup else [])],
                )
            )
        return [keys, Phase("sshd on management addresses", steps)]

    def _phase_files(self) -> Phase:
        steps = []
        hosts = self.hosts_file()
        for d in self.devices.values():
            res = [Resource("hostsdir", f"/etc/netns/{d.netns}")]
            files = {f"/etc/netns/{d.netns}/hosts": hosts}
            if d.cgroup:
                res += [Resource("cgroup", p) for p in d.cgroup.dirs]
                files.update(d.cgroup.settings)
            steps.append(Step("files", files=files, resources=res))
        return Phase("hosts files and cgroups", steps)

    def _phase_namespaces(self) -> Phase:
        ns = self.namespaces()
        return Phase(
            "namespaces",
            [Step("ip", lines=[f"netns add {n}" for n in ns], resources=[Resource("netns", n) for n in ns])],
        )

    def _phase_mgmt(self) -> Phase:
        lines = [
            f"link add {self.bridge} type bridge",
            f"addr add {self.bridge_addr} dev {self.bridge}",
            f"link set {self.bridge} up",
        ]
        res = [Resource("rootif", self.bridge)]
        for d in self.devices.values():
            lines += [
                f"link add {d.mgmt_peer} type veth peer name mgmt0 netns {d.netns}",
                f"link set {d.mgmt_peer} master {self.bridge} up",
            ]
            res.append(Resource("rootif", d.mgmt_peer))
        return Phase("management network", [Step("ip", lines=lines, resources=res)])

    def _phase_links(self) -> Phase:
        lines = shaper_for(self.shaper).veth_lines(self)
        # Interfaces live inside our namespaces and die with them: nothing more to journal.
        return Phase("link veths", [Step("ip", lines=lines)])

    def _device_ends(self) -> dict[str, list[tuple[LinkPlan, LinkEnd]]]:
        ends: dict[str, list[tuple[LinkPlan, LinkEnd]]] = {d: [] for d in self.devices}
        for link in self.links:
            ends[link.a.device].append((link, link.a))
            ends[link.b.device].append((link, link.b))
        return ends

    def _phase_addresses(self) -> Phase:
        steps = []
        ends = self._device_ends()
        for d in self.devices.values():
            lines = [
                "link set lo up",
                f"addr add {d.service_v4} dev lo",
                f"addr add {d.mgmt_addr} dev mgmt0",
                "link set mgmt0 up",
            ]
            if self.ipv6:
                lines.append(f"addr add {d.service_v6} dev lo nodad")
            for _link, end in ends[d.name]:
                lines.append(f"addr add {end.addr} dev {end.ifname}")
                if self.ipv6:
                    lines.append(f"addr add {end.addr6} dev {end.ifname} nodad")
            lines += route_lines("add", d.routes) + route_lines("add", d.routes6)
            steps.append(Step("ip", netns=d.netns, lines=lines))
        return Phase("addresses and routes", steps)

    def _phase_sysctl(self) -> Phase:
        """Runs before any interface exists in the namespace, so `default` settings apply to all.
        `nsops` steps run in-process (setns in a worker thread), no fork per namespace."""
        steps = []
        ends = self._device_ends()
        shaper = shaper_for(self.shaper)
        for d in self.devices.values():
            ops = [
                "sysctl net.ipv4.ip_forward 1",
                "sysctl net.ipv4.conf.all.rp_filter 0",
                "sysctl net.ipv4.conf.default.rp_filter 0",
            ]
            if self.ipv6:
                ops += ["sysctl net.ipv6.conf.all.forwarding 1", "sysctl net.ipv6.conf.default.accept_dad 0"]
            steps.append(Step("nsops", netns=d.netns, lines=ops))
            steps += shaper.device_setup(self, ends[d.name], d.netns)
        steps += shaper.extra_setup(self)
        return Phase("forwarding and link-down filter", steps)

    def _phase_ends_up(self) -> Phase:
        """Every link end up, in a phase of its own: a veth has carrier only once both ends are up,
        and a route via a neighbour on a link without carrier is refused ("No route to host").
        With the wire, this is also where offloads go off, on both ends of every veth whose frames
        cross the wire (TCP hangs otherwise); the wire processes start with --no-setup."""
        ends = self._device_ends()
        shaper = shaper_for(self.shaper)

        def ops(names: list[str]) -> list[str]:
            return [f"offloads-off {n}" for n in names if shaper.offloads_off] + [f"up {n}" for n in names]

        steps = [
            Step("nsops", netns=d.netns, lines=ops([end.ifname for _, end in ends[d.name]]))
            for d in self.devices.values()
            if ends[d.name]
        ]
        steps += shaper.extra_ends_up(self)
        return Phase("link ends up" + (" with offloads off" if shaper.offloads_off else ""), steps)

    def babeld_conf(self, d: DevicePlan) -> str:
        lines = [
            "# cnlab: babeld for device " + d.name,
            "default type wired hello-interval 1",
            f"redistribute local ip {SERVICE_NET} ge 32 allow",
            # link subnets too: replies to a source address on a link end must find it
            f"redistribute local ip {LINK_NET} ge 31 allow",
        ]
        if self.ipv6:
            lines += [
                f"redistribute local ip {SERVICE_NET6} ge 128 allow",
                f"redistribute local ip {LINK_NET6} ge 64 allow",
            ]
        lines += ["redistribute local deny", "redistribute deny"]
        return "\n".join(lines) + "\n"

    def _phase_babeld(self) -> Phase:
        steps = []
        ends = self._device_ends()
        for d in self.devices.values():
            ifs = [end.ifname for _, end in ends[d.name]]
            if not ifs:
                continue
            conf = f"{self.state_dir}/babeld/{d.netns}.conf"
            steps.append(
                Step(
                    "sh",
                    netns=d.netns,
                    files={conf: self.babeld_conf(d)},
                    lines=[
                        f"babeld -D -I {self.state_dir}/babeld/{d.netns}.pid -S {self.state_dir}/babeld/"
                        f"{d.netns}.state -L {self.state_dir}/babeld/{d.netns}.log -c {conf} " + " ".join(ifs)
                    ],
                )
            )
        return Phase("babeld", steps)


# ---- helpers used by the planner and by run-time changes --------------------------------------
def route_lines(verb: str, routes: list[Route]) -> list[str]:
    if verb == "del":
        return [f"route del {r.dst}" for r in routes]
    return [f"route {verb} {r.dst} via {r.via} dev {r.dev} src {r.src}" for r in routes]


def route_changes(old: list[Route], new: list[Route]) -> list[str]:
    """ip batch lines that turn one device's route set `old` into `new`."""
    old_by = {r.dst: r for r in old}
    new_by = {r.dst: r for r in new}
    lines = [f"route del {dst}" for dst in old_by if dst not in new_by]
    lines += route_lines("replace", [r for dst, r in new_by.items() if old_by.get(dst) != r])
    return lines


def _host(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return net.network_address + offset


def allocate_mgmt_subnet(n_devices: int, taken: list[str]) -> ipaddress.IPv4Network:
    """The first aligned block of 198.18.0.0/16 big enough for the bridge and every device that
    overlaps none of `taken` (subnets of other live testbeds, addresses in the root namespace)."""
    need = n_devices + 3
    prefix = 24
    while (1 << (32 - prefix)) < need:
        prefix -= 1
    if prefix < MGMT_POOL.prefixlen:
        raise InputError(f"{n_devices} devices do not fit the management range {MGMT_POOL}")
    taken_nets = [ipaddress.ip_network(t, strict=False) for t in taken]
    for block in MGMT_POOL.subnets(new_prefix=prefix):
        if not any(block.overlaps(t) for t in taken_nets):
            return block  # type: ignore[return-value]  # subnets of an IPv4Network
    raise RunError("no free management subnet left in 198.18.0.0/16: take some testbeds down")


class _RouteParts:
    """The strings routes are made of, by device position in `names` (the plan's device order):
    destinations and sources, and per device its links' (via v4, via v6, dev) by link index."""

    def __init__(self, devices: dict[str, DevicePlan], links: list[LinkPlan], names: tuple[str, ...]):
        self.dst4 = [devices[n].service_v4 for n in names]
        self.dst6 = [devices[n].service_v6 for n in names]
        self.src4 = [d.split("/")[0] for d in self.dst4]
        self.src6 = [d.split("/")[0] for d in self.dst6]
        pos = {n: i for i, n in enumerate(names)}
        self.ends: list[dict[int, tuple[str, str, str]]] = [{} for _ in names]
        for link in links:
            for mine, theirs in ((link.a, link.b), (link.b, link.a)):
                via = (theirs.addr.split("/")[0], theirs.addr6.split("/")[0], mine.ifname)
                self.ends[pos[mine.device]][link.index] = via


def static_routes(
    devices: dict[str, DevicePlan], links: list[LinkPlan], ipv6: bool, exclude: frozenset[str] = frozenset()
) -> dict[str, tuple[list[Route], list[Route]]]:
    """Routes for every device over the routed links not in `exclude` (link ids), destinations in
    device order (the rule: toolkit/testbed/routing.py)."""
    graph = routing.route_graph(devices, links, exclude)
    table = routing.next_hop_links(graph)
    parts = _RouteParts(devices, links, graph.names)
    d4, d6 = parts.dst4, parts.dst6
    out: dict[str, tuple[list[Route], list[Route]]] = {}
    for i, u in enumerate(graph.names):
        col = table[:, i]
        dsts = np.flatnonzero(col >= 0)
        hops = [parts.ends[i][k] for k in col[dsts].tolist()]
        pairs = list(zip(dsts.tolist(), hops, strict=True))
        s4, s6 = parts.src4[i], parts.src6[i]
        r4 = [Route(d4[v], e[0], e[2], s4) for v, e in pairs]
        r6 = [Route(d6[v], e[1], e[2], s6) for v, e in pairs] if ipv6 else []
        out[u] = (r4, r6)
    return out


@dataclass
class RouteUpdate:
    """How one device's routes change (e.g. for a partition): destinations to delete and routes
    to add or replace, v4 and v6 together. `lines()` is the same as `ip -batch` input."""

    device: str
    netns: str
    delete: list[str]  # destinations
    replace: list[RouteSpec]  # (dst, via, dev, src): tuples, as there can be a million of them

    def lines(self) -> list[str]:
        return [f"route del {dst}" for dst in self.delete] + [
            "route replace {} via {} dev {} src {}".format(*spec) for spec in self.replace
        ]


def route_updates(
    devices: dict[str, DevicePlan],
    links: list[LinkPlan],
    ipv6: bool,
    old_exclude: frozenset[str],
    new_exclude: frozenset[str],
) -> list[RouteUpdate]:
    """What turns the static routes over the links not in `old_exclude` into those over the links
    not in `new_exclude`: only the routes whose link changes, for the devices that have any.
    The same result as `route_changes` of both `static_routes`, without building either."""
    old = routing.next_hop_links(routing.route_graph(devices, links, old_exclude))
    graph = routing.route_graph(devices, links, new_exclude)
    new = routing.next_hop_links(graph)
    parts = _RouteParts(devices, links, graph.names)
    d4, d6 = parts.dst4, parts.dst6
    changed = old != new
    out = []
    for i in np.flatnonzero(changed.any(axis=0)).tolist():
        rows = np.flatnonzero(changed[:, i])
        pairs = list(zip(rows.tolist(), new[rows, i].tolist(), strict=True))
        gone = [v for v, k in pairs if k < 0]
        moved = [(v, parts.ends[i][k]) for v, k in pairs if k >= 0]
        s4, s6 = parts.src4[i], parts.src6[i]
        delete = [d4[v] for v in gone] + ([d6[v] for v in gone] if ipv6 else [])
        replace = [(d4[v], e[0], e[2], s4) for v, e in moved]
        if ipv6:
            replace += [(d6[v], e[1], e[2], s6) for v, e in moved]
        u = graph.names[i]
        out.append(RouteUpdate(u, devices[u].netns, delete, replace))
    return out


def _cgroup(
    tid: str, netns: str, cpus: float | None, memory_mb: int | None, controllers: dict[str, str]
) -> CgroupPlan | None:
    if cpus is None and memory_mb is None:
        return None
    dirs: list[str] = []
    settings: dict[str, str] = {}
    tasks: list[str] = []
    top = naming.cgroup_name(tid)
    v2 = {c: p[3:] for c, p in controllers.items() if p.startswith("v2:")}
    v1 = {c: p[3:] for c, p in controllers.items() if p.startswith("v1:")}
    if v2:
        root = next(iter(v2.values()))
        dirs += [f"{root}/{top}", f"{root}/{top}/{netns}"]
        ctl = " ".join(f"+{c}" for c in sorted(v2))
        settings[f"{root}/cgroup.subtree_control"] = ctl
        settings[f"{root}/{top}/cgroup.subtree_control"] = ctl
        if cpus is not None and "cpu" in v2:
            settings[f"{root}/{top}/{netns}/cpu.max"] = f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}"
        if memory_mb is not None and "memory" in v2:
            settings[f"{root}/{top}/{netns}/memory.max"] = str(memory_mb * 1024 * 1024)
        tasks.append(f"{root}/{top}/{netns}/cgroup.procs")
    for ctl, root in sorted(v1.items()):
        if ctl in v2:
            continue
        if (ctl == "cpu" and cpus is None) or (ctl == "memory" and memory_mb is None):
            continue
        base = f"{root}/{top}"
        dirs += [base, f"{base}/{netns}"]
        if ctl == "cpu":
            settings[f"{base}/{netns}/cpu.cfs_period_us"] = str(CPU_PERIOD_US)
            settings[f"{base}/{netns}/cpu.cfs_quota_us"] = str(int(cpus * CPU_PERIOD_US))  # type: ignore[operator]
        else:
            settings[f"{base}/{netns}/memory.limit_in_bytes"] = str(memory_mb * 1024 * 1024)  # type: ignore[operator]
        tasks.append(f"{base}/{netns}/tasks")
    if not dirs:
        return None
    return CgroupPlan(dirs=list(dict.fromkeys(dirs)), settings=settings, tasks_files=tasks)


def split_links_evenly(links: list[LinkPlan], shards: int) -> list[list[int]]:
    """Link indices per wire process (the wire's own load balancing)."""
    from ..wire.launch import split_links

    return [[lk.index for lk in group] for group in split_links(links, shards)]


def plan_testbed(
    topo: Topology,
    testbed_id: str,
    *,
    shaper: ShaperName,
    routing: Routing = "static",
    state_dir: str,
    mgmt_taken: list[str] | None = None,
    cgroup_controllers: dict[str, str] | None = None,
    ipv6: bool = True,
    wire_shards: int = 1,
    seed: int = 42,
) -> TestbedPlan:
    """Turn a topology into a testbed plan. Raises InputError for what the emulator can't do."""
    tid = naming.check_id(testbed_id)
    ssh = sorted(d.name for d in topo.devices.values() if d.kind != "emulated")
    if ssh:
        raise InputError(
            f"topology {topo.name!r} has ssh devices ({', '.join(ssh[:5])}"
            f"{', ...' if len(ssh) > 5 else ''}) among emulated ones: a testbed is either emulated "
            "(namespaces on this machine) or remote (every device `kind: ssh`); split the topology"
        )
    if not topo.devices:
        raise InputError(f"topology {topo.name!r} has no devices")
    n = len(topo.devices)
    if n >= SERVICE_NET.num_addresses - 1 or len(topo.links) > LINK_NET.num_addresses // 2:
        raise InputError(f"topology too large for the address plan ({n} devices, {len(topo.links)} links)")
    mgmt = allocate_mgmt_subnet(n, mgmt_taken or [])
    controllers = cgroup_controllers or {}

    devices: dict[str, DevicePlan] = {}
    for i, dev in enumerate(topo.devices.values()):
        ns = naming.device_netns(tid, i)
        devices[dev.name] = DevicePlan(
            name=dev.name,
            index=i,
            netns=ns,
            site=dev.site,
            mgmt_peer=naming.mgmt_peer(tid, i),
            mgmt_addr=f"{_host(mgmt, i + 2)}/{mgmt.prefixlen}",
            service_v4=f"{_host(SERVICE_NET, i + 1)}/32",
            service_v6=f"{_host(SERVICE_NET6, i + 1)}/128",
            cgroup=_cgroup(tid, ns, dev.profile.cpus, dev.profile.memory_mb, controllers),
            deploy=dev.deploy,
        )

    wire_ns = naming.wire_netns(tid) if shaper_for(shaper).uses_wire_namespace else None
    links: list[LinkPlan] = []
    for k, link in enumerate(topo.links):
        if link.a not in devices or link.b not in devices:
            raise InputError(f"link {link.a}~{link.b} names an unknown device")
        if link.a == link.b:
            raise InputError(f"link {link.a}~{link.b} joins a device to itself")
        ends = []
        for side, end_dev, off in (("a", link.a, 0), ("b", link.b, 1)):
            ends.append(
                LinkEnd(
                    device=end_dev,
                    netns=devices[end_dev].netns,
                    ifname=naming.link_end(tid, k, side),
                    addr=f"{_host(LINK_NET, 2 * k + off)}/31",
                    addr6=f"fd00:c1:{k:x}::{off + 1}/64",
                    wire_if=naming.wire_end(tid, k, side) if wire_ns else None,
                )
            )
        links.append(
            LinkPlan(
                index=k,
                id=f"{link.a}~{link.b}",
                a=ends[0],
                b=ends[1],
                forward=link.forward,
                reverse=link.reverse,
                up=link.up,
                routed=link.up,
            )
        )

    if routing == "static":
        for name, (r4, r6) in static_routes(devices, links, ipv6).items():
            devices[name].routes, devices[name].routes6 = r4, r6

    shards: list[WireShard] = []
    if wire_ns:
        count = max(1, min(wire_shards, len(links)))
        for s, idxs in enumerate(split_links_evenly(links, count)):
            spec = WireSpec(seed=seed + s, links=tuple(wire_link_spec(links[i]) for i in idxs))
            shards.append(
                WireShard(
                    index=s,
                    netns=wire_ns,
                    spec=spec,
                    spec_path=f"{state_dir}/wire-{s}.json",
                    control_path=f"{state_dir}/wire-{s}.sock",
                    log_path=f"{state_dir}/wire-{s}.log",
                )
            )

    return TestbedPlan(
        id=tid,
        topology=topo.name,
        shaper=shaper,
        routing=routing,
        ipv6=ipv6,
        state_dir=state_dir,
        mgmt_subnet=str(mgmt),
        bridge=naming.bridge(tid),
        bridge_addr=f"{_host(mgmt, 1)}/{mgmt.prefixlen}",
        devices=devices,
        links=links,
        wire_netns=wire_ns,
        wire_shards=shards,
        seed=seed,
    )


def wire_link_spec(link: LinkPlan) -> LinkSpec:
    assert link.a.wire_if and link.b.wire_if
    return LinkSpec(link.id, link.a.wire_if, link.b.wire_if, link.forward, link.reverse, link.up)


def plan_from_json(text: str) -> TestbedPlan:
    """Read back a plan written with `to_json()` (the state dir keeps one per testbed)."""
    raw = json.loads(text)

    def end(e: dict[str, Any]) -> LinkEnd:
        return LinkEnd(**e)

    devices = {}
    for name, d in raw["devices"].items():
        cg = CgroupPlan(**d["cgroup"]) if d["cgroup"] else None
        devices[name] = DevicePlan(
            **{
                **d,
                "cgroup": cg,
                "routes": [Route(**r) for r in d["routes"]],
                "routes6": [Route(**r) for r in d["routes6"]],
            }
        )
    links = [
        LinkPlan(
            **{
                **lk,
                "a": end(lk["a"]),
                "b": end(lk["b"]),
                "forward": Direction(**lk["forward"]),
                "reverse": Direction(**lk["reverse"]),
            }
        )
        for lk in raw["links"]
    ]
    shards = [WireShard(**{**s, "spec": parse_spec(s["spec"], "plan.json")}) for s in raw["wire_shards"]]
    return TestbedPlan(**{**raw, "devices": devices, "links": links, "wire_shards": shards})
