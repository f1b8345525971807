"""The userspace link emulator as a shaper: every link's two veths meet in a wire namespace, where
wire processes (toolkit.wire) forward frames with per-direction delay, jitter, loss, rate
and up/down. Frames cross userspace, so offloads go off on both ends of every such veth."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import RunError
from ...topology.model import Direction
from ..steps import Phase, Resource, Step
from .base import LinkRuntime, Shaper

if TYPE_CHECKING:
    from ..plan import LinkEnd, LinkPlan, TestbedPlan


class WireShaper(Shaper):
    name: ClassVar[str] = "wire"
    uses_wire_namespace: ClassVar[bool] = True
    offloads_off: ClassVar[bool] = True

    # ---- plan time -----------------------------------------------------------------------------
    def veth_lines(self, plan: TestbedPlan) -> list[str]:
        return [
            f"link add {end.ifname} netns {end.netns} type veth peer name {end.wire_if} netns {plan.wire_netns}"
            for lk in plan.links
            for end in (lk.a, lk.b)
        ]

    def device_setup(self, plan: TestbedPlan, ends: list[tuple[LinkPlan, LinkEnd]], netns: str) -> list[Step]:
        return []  # links go down inside the wire

    def extra_setup(self, plan: TestbedPlan) -> list[Step]:
        # The wire namespace has no stack of its own on the link ends: no IPv6 (autoconf, DAD).
        return [
            Step(
                "nsops",
                netns=plan.wire_netns,
                lines=["sysctl net.ipv6.conf.all.disable_ipv6 1", "sysctl net.ipv6.conf.default.disable_ipv6 1"],
            )
        ]

    def extra_ends_up(self, plan: TestbedPlan) -> list[Step]:
        names = [str(end.wire_if) for lk in plan.links for end in (lk.a, lk.b)]
        return [
            Step(
                "nsops",
                netns=plan.wire_netns,
                lines=["up lo"] + [f"offloads-off {n}" for n in names] + [f"up {n}" for n in names],
            )
        ]

    def phases(self, plan: TestbedPlan) -> list[Phase]:
        return [
            Phase(
                "wire processes",
                [
                    Step(
                        "wire",
                        netns=s.netns,
                        files={s.spec_path: json.dumps(s.spec.to_dict(), indent=1)},
                        lines=[str(s.index)],
                        resources=[Resource("file", s.spec_path)],
                    )
                    for s in plan.wire_shards
                ],
                parallel=max(1, len(plan.wire_shards)),
            )
        ]

    # ---- run time ------------------------------------------------------------------------------
    @staticmethod
    def client(plan: TestbedPlan, link_id: str) -> Any:
        from ...wire import WireClient

        for shard in plan.wire_shards:
            if any(lk.id == link_id for lk in shard.spec.links):
                return WireClient(shard.control_path)
        raise RunError(f"link {link_id} has no wire process")

    def set_directions(
        self, rt: LinkRuntime, link: LinkPlan, new: tuple[Direction, Direction], old: tuple[Direction, Direction]
    ) -> None:
        self.client(rt.plan, link.id).set_link(link.id, forward=asdict(new[0]), reverse=asdict(new[1]))

    def set_up(self, rt: LinkRuntime, link: LinkPlan, up: bool) -> None:
        self.client(rt.plan, link.id).set_up(link.id, up)

    def link_stats(self, rt: LinkRuntime) -> dict[str, dict[str, Any]]:
        from ...wire import WireClient

        out: dict[str, dict[str, Any]] = {}
        for shard in rt.plan.wire_shards:
            with WireClient(shard.control_path) as client:
                out.update(client.stats()["links"])
        return out

    def stats_table(self, stats: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
        from ...wire.stats import lateness_quantile

        def ms(x: float) -> str:
            return f"{x * 1000:.2f}"

        cols = [
            "link",
            "dir",
            "up",
            "ringdrop",
            "rx",
            "fwd",
            "lost",
            "qdrop",
            "downdrop",
            "late50ms",
            "late99ms",
            "latemax",
        ]
        rows = []
        for lid, s in stats.items():
            for d in ("forward", "reverse"):
                ds = s.get(d) or {}
                lat = ds.get("lateness") or {"count": 0}
                seen = bool(lat.get("count"))
                rows.append(
                    [
                        lid,
                        "a>b" if d == "forward" else "b>a",
                        str(s.get("up")),
                        str(ds.get("ring_drops")),
                        str(ds.get("received")),
                        str(ds.get("forwarded")),
                        str(ds.get("lost")),
                        str(ds.get("queue_drops")),
                        str(ds.get("dropped_down")),
                        ms(lateness_quantile(lat, 0.5)) if seen else "-",
                        ms(lateness_quantile(lat, 0.99)) if seen else "-",
                        ms(lat.get("max_s", 0)) if seen else "-",
                    ]
                )
        return cols, rows
