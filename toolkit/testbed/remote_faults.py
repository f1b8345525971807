"""Link faults on real devices (kind: ssh), planned as the exact nft and tc text a device runs.
Pure: no SSH here (the `ssh` shaper runs the text; `remote.py` probes what a device has).

A link between two real devices is not a veth cnlab owns, so a fault acts on the traffic between
the two devices' addresses, on both devices:

- down: an nftables table `inet cnlab_faults` drops packets to and from the peer's address
  (input and output hooks). The table is rebuilt whole from the device's set of peers that are
  down, in one atomic `nft -f` transaction; with no peer down the table is deleted.
- delay, jitter, loss, rate (one direction a->b, on a's egress): the root qdisc of the interface
  a reaches b through becomes an htb whose default class is unshaped; each shaped peer gets a
  class with a netem leaf (and a tbf under it for a rate) and a u32 filter on the peer's address.
  The tree is rebuilt whole from the device's shaped peers on that interface; with none, the
  root qdisc is deleted (the kernel's default returns).

Only traffic between the two devices' own addresses is affected, not traffic merely routed over
that hop. Peers need IP addresses (`host:` an address, not a name).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..topology.model import Direction
from .shapers.netem_lines import netem_args, tbf_args

NFT_TABLE = "cnlab_faults"
HTB_RATE = "10gbit"  # classes are not meant to limit: netem (and its tbf) shape


@dataclass(frozen=True)
class Capabilities:
    """What a device can do for faults (from `remote.CAPABILITY_PROBE`)."""

    nft: bool = False
    tc: bool = False
    netem: str = "unknown"  # yes | no | unknown

    def missing_for(self, fault: str) -> str | None:
        """None when the device can do `fault` (down | shape), else what it lacks."""
        if fault == "down" and not self.nft:
            return "nftables (the `nft` command, root)"
        if fault == "shape":
            if not self.tc:
                return "tc (iproute2)"
            if self.netem != "yes":
                return "the netem qdisc (kernel module sch_netem)" + (
                    "" if self.netem == "no" else ", not confirmed by the probe"
                )
        return None


def check_capable(device: str, caps: Capabilities | None, fault: str, link_id: str) -> None:
    """InputError (exit 2) naming the device and what it lacks, before anything is changed."""
    if caps is None:
        raise InputError(f"link {link_id}: device {device} was not probed (bring the testbed up again)")
    missing = caps.missing_for(fault)
    if missing:
        what = "taken down" if fault == "down" else "shaped (delay, jitter, loss, rate)"
        raise InputError(f"link {link_id} cannot be {what}: device {device} lacks {missing}")


def ip_of(device: str, host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise InputError(
            f"device {device}: host {host!r} is a name, not an address; link faults on real devices "
            "filter by address (give `host:` as an IP address)"
        ) from None


def nft_script(peers_down: list[str]) -> str:
    """The `nft -f -` text that makes the device drop traffic to and from these addresses
    (and removes the table when there are none). Idempotent: declare, delete, declare again."""
    lines = [f"table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}"]
    if not peers_down:
        return "\n".join(lines) + "\n"
    v4 = sorted({a for a in peers_down if ipaddress.ip_address(a).version == 4}, key=ipaddress.ip_address)
    v6 = sorted({a for a in peers_down if ipaddress.ip_address(a).version == 6}, key=ipaddress.ip_address)

    def elements(addrs: list[str]) -> str:
        return f" elements = {{ {', '.join(addrs)} }};" if addrs else ""

    lines += [
        f"table inet {NFT_TABLE} {{",
        f"  set down4 {{ type ipv4_addr;{elements(v4)} }}",
        f"  set down6 {{ type ipv6_addr;{elements(v6)} }}",
        "  chain out { type filter hook output priority 0; policy accept; "
        "ip daddr @down4 drop; ip6 daddr @down6 drop; }",
        "  chain in { type filter hook input priority 0; policy accept; ip saddr @down4 drop; ip6 saddr @down6 drop; }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def shaped(d: Direction) -> bool:
    return d != Direction(reorder=d.reorder)


@dataclass(frozen=True)
class PeerShape:
    """One shaped direction on a device's egress: towards `peer_addr`, as link number `slot`."""

    slot: int  # the link's index in the plan: fixes class and qdisc handles
    peer_addr: str
    direction: Direction


def tc_lines(ifname: str, peers: list[PeerShape]) -> tuple[list[str], list[str]]:
    """(lines run first, ignoring errors; `tc -batch -` lines) that make ifname's egress shape
    traffic to each peer as its direction says. The first part deletes the old tree (absent on a
    first run); with no shaped peer the second part is empty and the kernel default returns."""
    reset = [f"qdisc del dev {ifname} root"]
    peers = [p for p in peers if shaped(p.direction)]
    if not peers:
        return reset, []
    lines = [
        f"qdisc add dev {ifname} root handle 1: htb default 1",
        f"class add dev {ifname} parent 1: classid 1:1 htb rate {HTB_RATE}",
    ]
    for p in sorted(peers, key=lambda p: p.slot):
        cls = f"1:{p.slot + 2:x}"
        netem = f"{p.slot + 0x100:x}:"
        lines += [
            f"class add dev {ifname} parent 1: classid {cls} htb rate {HTB_RATE}",
            f"qdisc add dev {ifname} parent {cls} handle {netem} netem " + " ".join(netem_args(p.direction)),
        ]
        if p.direction.rate_kbit:
            lines.append(
                f"qdisc add dev {ifname} parent {netem}1 handle {p.slot + 0x1000:x}: tbf "
                + " ".join(tbf_args(p.direction.rate_kbit))
            )
        addr = ipaddress.ip_address(p.peer_addr)
        if addr.version == 4:
            lines.append(
                f"filter add dev {ifname} parent 1: protocol ip prio 1 u32 match ip dst {addr}/32 flowid {cls}"
            )
        else:
            lines.append(
                f"filter add dev {ifname} parent 1: protocol ipv6 prio 2 u32 match ip6 dst {addr}/128 flowid {cls}"
            )
    return reset, lines


@dataclass(frozen=True)
class RemoteCommand:
    """What a device runs: argv, with `input` on its stdin."""

    argv: list[str]
    input: str = ""

    def show(self) -> str:
        return " ".join(self.argv) + (" <<'EOF'\n" + self.input + "EOF" if self.input else "")


def nft_command(peers_down: list[str]) -> RemoteCommand:
    return RemoteCommand(["nft", "-f", "-"], nft_script(peers_down))


def tc_command(ifname: str, peers: list[PeerShape]) -> RemoteCommand:
    reset, lines = tc_lines(ifname, peers)
    first = "; ".join(f"tc {r} 2>/dev/null" for r in reset)
    if not lines:
        return RemoteCommand(["sh", "-c", first + "; true"])
    return RemoteCommand(["sh", "-c", first + "; exec tc -batch -"], "\n".join(lines) + "\n")


def route_command(peer_addr: str) -> RemoteCommand:
    """Which interface the device reaches a peer through (`parse_route_dev` reads the answer)."""
    return RemoteCommand(["ip", "-o", "route", "get", peer_addr])


def parse_route_dev(text: str) -> str:
    words = text.split()
    if "dev" not in words or words.index("dev") + 1 >= len(words):
        raise ValueError(f"no 'dev' in {text.strip()!r}")
    return words[words.index("dev") + 1]


@dataclass
class FaultState:
    """Every device's faults, kept in the testbed's state (`faults.json`): per device the links
    that are down (link id -> peer address) and its shaped egress directions (link id ->
    {ifname, slot, peer, direction})."""

    down: dict[str, dict[str, str]] = field(default_factory=dict)
    shapes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: object) -> FaultState:
        if not isinstance(raw, dict):
            return cls()
        return cls(down=dict(raw.get("down") or {}), shapes=dict(raw.get("shapes") or {}))

    def peers_down(self, device: str) -> list[str]:
        return sorted(set(self.down.get(device, {}).values()))

    def peer_shapes(self, device: str, ifname: str) -> list[PeerShape]:
        return [
            PeerShape(int(s["slot"]), str(s["peer"]), Direction(**s["direction"]))
            for s in self.shapes.get(device, {}).values()
            if s["ifname"] == ifname
        ]
