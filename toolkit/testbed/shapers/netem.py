"""The kernel netem shaper: each direction shaped on the egress of its sending end (netem, plus a
tbf child for a rate); link down through the nftables set every device has."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ... import capabilities
from ...topology.model import Direction
from ..steps import Phase, Step
from .base import LinkRuntime, Shaper
from .netem_lines import direction_lines

if TYPE_CHECKING:
    from ..plan import LinkPlan, TestbedPlan


class NetemShaper(Shaper):
    name: ClassVar[str] = "netem"

    def available(self) -> str | None:
        if capabilities.has_netem():
            return None
        return "this kernel has no sch_netem (`cnlab doctor` shows it); use --shaper wire, the userspace link emulator"

    def phases(self, plan: TestbedPlan) -> list[Phase]:
        lines_by_ns: dict[str, list[str]] = {}
        for link in plan.links:
            for end, d in ((link.a, link.forward), (link.b, link.reverse)):
                lines_by_ns.setdefault(end.netns, []).extend(direction_lines(end.ifname, d))
        order = [d.netns for d in plan.devices.values() if d.netns in lines_by_ns]
        return [Phase("netem shaping", [Step("tc", netns=ns, lines=lines_by_ns[ns]) for ns in order])]

    def set_directions(
        self, rt: LinkRuntime, link: LinkPlan, new: tuple[Direction, Direction], old: tuple[Direction, Direction]
    ) -> None:
        for end, d, before in ((link.a, new[0], old[0]), (link.b, new[1], old[1])):
            lines = direction_lines(end.ifname, d, had_rate=before.rate_kbit is not None)
            rt.ns_run(end.netns, ["tc", "-batch", "-"], input="\n".join(lines) + "\n")
