"""The shaper interface: the plan phases a shaper adds, and what it does at run time.

Plan-time methods are pure (they read the plan and return steps). Run-time methods receive a
`LinkRuntime`, the small part of a live testbed they need (its plan and a way to run commands in
a namespace), so they stay testable with a recording fake.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ...errors import RunError
from ...topology.model import Direction
from ..steps import Phase, Step

if TYPE_CHECKING:
    from ..plan import LinkEnd, LinkPlan, TestbedPlan

NFT_LINKDOWN_TABLE = """table inet cnlab {
 set linkdown { type ifname; }
 chain linkout { type filter hook output priority 0; oifname @linkdown drop; }
 chain linkfwd { type filter hook forward priority 0; oifname @linkdown drop; }
}
"""


class LinkRuntime(Protocol):
    """What a shaper needs from a live testbed."""

    plan: TestbedPlan

    def ns_run(self, netns: str, argv: list[str], *, input: str | None = None) -> str:
        """Run argv inside namespace netns and return its output; raise RunError naming the
        namespace and the command when it fails."""


class Shaper(ABC):
    name: ClassVar[str]
    uses_wire_namespace: ClassVar[bool] = False  # link ends meet in a wire namespace, not directly
    offloads_off: ClassVar[bool] = False  # frames cross userspace: checksum/segmentation offloads off
    can_shape: ClassVar[bool] = True  # delay/loss/rate can be set (else only up/down)

    def available(self) -> str | None:
        """None when this machine can use the shaper, else why not."""
        return None

    # ---- plan time (pure) ----------------------------------------------------------------------
    def veth_lines(self, plan: TestbedPlan) -> list[str]:
        """`ip -batch` lines creating every link's veths."""
        return [
            f"link add {lk.a.ifname} netns {lk.a.netns} type veth peer name {lk.b.ifname} netns {lk.b.netns}"
            for lk in plan.links
        ]

    def device_setup(self, plan: TestbedPlan, ends: list[tuple[LinkPlan, LinkEnd]], netns: str) -> list[Step]:
        """Steps in a device namespace before its interfaces exist: by default an nftables set of
        link ends that are down (an interface set down would take its routes with it)."""
        if not ends:
            return []
        down = [end.ifname for link, end in ends if not link.up]
        return [
            Step(
                "sh",
                netns=netns,
                lines=[
                    "nft -f - <<'EOF'\n"
                    + NFT_LINKDOWN_TABLE
                    + (f"add element inet cnlab linkdown {{ {', '.join(down)} }}\n" if down else "")
                    + "EOF"
                ],
            )
        ]

    def extra_setup(self, plan: TestbedPlan) -> list[Step]:
        """Steps outside the devices (the wire namespace) in the same phase."""
        return []

    def extra_ends_up(self, plan: TestbedPlan) -> list[Step]:
        return []

    @abstractmethod
    def phases(self, plan: TestbedPlan) -> list[Phase]:
        """Phases after addresses and routes that make links behave as configured."""

    # ---- run time ------------------------------------------------------------------------------
    def set_directions(
        self, rt: LinkRuntime, link: LinkPlan, new: tuple[Direction, Direction], old: tuple[Direction, Direction]
    ) -> None:
        """Make link's forward and reverse directions behave as `new` (they were `old`)."""
        raise RunError(
            f"testbed {rt.plan.id} runs without a shaper (--shaper {self.name}): links "
            "cannot be shaped; only up/down, partition and heal work"
        )

    def set_up(self, rt: LinkRuntime, link: LinkPlan, up: bool) -> None:
        """Let frames through a link (up) or drop them (down), both directions."""
        for end in (link.a, link.b):
            # add then delete in one transaction: succeeds whether or not the element was there
            verb = (
                "add element inet cnlab linkdown {{ {0} }}\ndelete element inet cnlab linkdown {{ {0} }}\n"
                if up
                else "add element inet cnlab linkdown {{ {0} }}\n"
            ).format(end.ifname)
            rt.ns_run(end.netns, ["nft", "-f", "-"], input=verb)

    def link_stats(self, rt: LinkRuntime) -> dict[str, dict[str, Any]]:
        """Per link id and end: the kernel's interface counters."""
        out: dict[str, dict[str, Any]] = {}
        for link in rt.plan.links:
            entry = {}
            for name, end in (("a", link.a), ("b", link.b)):
                text = rt.ns_run(end.netns, ["ip", "-s", "-j", "link", "show", end.ifname])
                entry[name] = json.loads(text)[0].get("stats64", {})
            out[link.id] = entry
        return out

    def stats_table(self, stats: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
        """Column names and rows for `cnlab status ID --links`."""
        cols = ["link", "end", "tx packets", "tx bytes", "rx packets", "rx bytes", "dropped"]
        rows = []
        for lid, s in stats.items():
            for end in ("a", "b"):
                e = s.get(end) or {}
                tx, rx = e.get("tx", {}), e.get("rx", {})
                rows.append(
                    [
                        lid,
                        end,
                        str(tx.get("packets")),
                        str(tx.get("bytes")),
                        str(rx.get("packets")),
                        str(rx.get("bytes")),
                        str(tx.get("dropped", 0) + rx.get("dropped", 0)),
                    ]
                )
        return cols, rows
