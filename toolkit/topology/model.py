"""The topology model: plain, immutable dataclasses that every layer reads.

The YAML loader (`loader.py`) and the NetJSON importer (`netjson.py`) produce a `Topology`;
planners and executors consume it. Nothing here parses or touches the system.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import networkx as nx

DeviceKind = Literal["emulated", "ssh"]
DeployMethod = Literal["direct", "ansible"]


@dataclass(frozen=True)
class Profile:
    """A hardware profile: what a device may use. None means no limit."""

    name: str
    cpus: float | None
    memory_mb: int | None
    source: str = ""


@dataclass(frozen=True)
class Direction:
    """How one direction of a link behaves.

    loss_burst is the mean length of a loss burst in packets (Gilbert-Elliott); 1 means
    independent random loss. rate_kbit None means unlimited. reorder lets jitter reorder packets.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    loss_burst: float = 1.0
    rate_kbit: int | None = None
    reorder: bool = False

    def with_changes(self, **changes: object) -> Direction:
        """A copy with the given fields changed (rate_kbit=None: unlimited)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Link:
    """A data-plane link between devices a and b; forward is a->b, reverse is b->a."""

    a: str
    b: str
    forward: Direction
    reverse: Direction
    preset: str | None = None
    up: bool = True

    @property
    def key(self) -> frozenset[str]:
        return frozenset((self.a, self.b))

    def direction(self, src: str, dst: str) -> Direction:
        if (src, dst) == (self.a, self.b):
            return self.forward
        if (src, dst) == (self.b, self.a):
            return self.reverse
        raise KeyError(f"link {self.a}-{self.b} does not join {src} and {dst}")


@dataclass(frozen=True)
class SshTarget:
    """How to reach a real device over SSH. host_key is a pinned SHA256 fingerprint or None.
    root: a prefix for everything cnlab installs on the device ("" = the device's own /)."""

    host: str
    user: str = "root"
    port: int = 22
    key: str | None = None
    host_key: str | None = None
    become: bool = False
    root: str = ""


@dataclass(frozen=True)
class Device:
    name: str
    profile: Profile
    kind: DeviceKind = "emulated"
    site: str | None = None
    ssh: SshTarget | None = None
    deploy: DeployMethod = "direct"  # ssh devices: always "ansible"
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


TrustMode = Literal["all", "site", "none"]


@dataclass(frozen=True)
class Federation:
    """Which devices run a node of which image, who trusts whom, and what each node starts with.

    trust: `all` (every node trusts every other), `site` (nodes of the same site), `none`; the
    explicit `trust_pairs` are added on top (symmetric). accounts: the usernames created on every
    node. limits and settings pass through to the image's config (e.g. p2pvalue's `limits`,
    `federation`, `storage`). Domains are `<device>.<domain_suffix>` (default: the topology name)."""

    image: str
    devices: tuple[str, ...]
    trust: TrustMode = "all"
    trust_pairs: tuple[tuple[str, str], ...] = ()
    accounts: tuple[str, ...] = ()
    limits: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    settings: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    domain_suffix: str | None = None


@dataclass(frozen=True)
class Topology:
    name: str
    devices: dict[str, Device]
    links: tuple[Link, ...]
    sites: tuple[str, ...] = ()
    federation: Federation | None = None
    allow_partitioned: bool = False
    routing: Literal["static", "babeld"] = "static"
    description: str = ""
    source: Path | None = None
    provenance: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def link_between(self, a: str, b: str) -> Link:
        wanted = frozenset((a, b))
        for link in self.links:
            if link.key == wanted:
                return link
        raise KeyError(f"no link between {a} and {b}")

    def devices_in_site(self, site: str) -> list[str]:
        return [d.name for d in self.devices.values() if d.site == site]

    def graph(self, only_up: bool = True) -> nx.Graph[str]:
        """The data plane as an undirected graph weighted by mean one-way delay (ms)."""
        import networkx as nx  # imported here: the wire process uses this module, not graphs

        g: nx.Graph[str] = nx.Graph()
        g.add_nodes_from(self.devices)
        for link in self.links:
            if link.up or not only_up:
                weight = (link.forward.delay_ms + link.reverse.delay_ms) / 2
                g.add_edge(link.a, link.b, delay_ms=weight)
        return g
