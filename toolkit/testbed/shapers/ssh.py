"""Faults on real devices (remote testbeds): nft and tc netem over SSH (`remote_faults.py` plans
the exact text). A device that lacks what a fault needs is refused before anything changes,
naming the device and the missing capability (exit 2), from what `up` probed.

Every change is journalled before it is made (`remote-nft <device>`, `remote-tc <device>/<if>`),
so `cnlab down` removes it; the faults in force are kept in the state's `faults.json`, from which
each device's nft table and tc tree are rebuilt whole.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ...errors import RunError
from ...topology.model import Direction
from ..remote_faults import (
    Capabilities,
    FaultState,
    RemoteCommand,
    check_capable,
    ip_of,
    nft_command,
    parse_route_dev,
    route_command,
    shaped,
    tc_command,
)
from ..steps import Phase, Step
from .base import Shaper

if TYPE_CHECKING:
    from ..plan import LinkEnd, LinkPlan, TestbedPlan


class RemoteRuntime(Protocol):
    """What the ssh shaper needs from a live remote testbed (a recording fake in the tests)."""

    plan: TestbedPlan

    def remote_run(self, device: str, cmd: RemoteCommand) -> str: ...
    def capabilities(self) -> dict[str, Capabilities]: ...
    def fault_state(self) -> FaultState: ...
    def save_fault_state(self, faults: FaultState) -> None: ...
    def journal(self, kind: str, name: str) -> None: ...


class SshShaper(Shaper):
    name: ClassVar[str] = "ssh"

    def available(self) -> str | None:
        return "the ssh shaper is for remote testbeds (every device `kind: ssh`); they choose it themselves"

    def phases(self, plan: TestbedPlan) -> list[Phase]:
        return []

    def device_setup(self, plan: TestbedPlan, ends: list[tuple[LinkPlan, LinkEnd]], netns: str) -> list[Step]:
        return []

    # ---- run time ------------------------------------------------------------------------------
    def set_up(self, rt: Any, link: LinkPlan, up: bool) -> None:
        rt = _remote(rt)
        ends = ((link.a, link.b), (link.b, link.a))
        caps = rt.capabilities()
        faults = rt.fault_state()
        changed = []
        for end, other in ends:
            was_down = link.id in faults.down.get(end.device, {})
            if up == (not was_down):
                continue  # already as wanted
            if not up:
                check_capable(end.device, caps.get(end.device), "down", link.id)
                ip_of(other.device, other.addr)
            changed.append((end, other))
        for end, other in changed:
            table = faults.down.setdefault(end.device, {})
            if up:
                table.pop(link.id, None)
            else:
                table[link.id] = other.addr
                rt.journal("remote-nft", end.device)
            rt.remote_run(end.device, nft_command(faults.peers_down(end.device)))
            rt.save_fault_state(faults)

    def set_directions(
        self, rt: Any, link: LinkPlan, new: tuple[Direction, Direction], old: tuple[Direction, Direction]
    ) -> None:
        rt = _remote(rt)
        caps = rt.capabilities()
        faults = rt.fault_state()
        work = []
        for (end, other), d, was in zip(((link.a, link.b), (link.b, link.a)), new, old, strict=True):
            if d == was:
                continue
            current = faults.shapes.get(end.device, {}).get(link.id)
            if shaped(d) or current is not None:
                check_capable(end.device, caps.get(end.device), "shape", link.id)
                ip_of(other.device, other.addr)
                work.append((end, other, d, current))
        for end, other, d, current in work:
            if current is not None:
                ifname = str(current["ifname"])
            else:
                out = rt.remote_run(end.device, route_command(other.addr))
                try:
                    ifname = parse_route_dev(out)
                except ValueError as e:
                    raise RunError(f"device {end.device}: no route to {other.device} ({other.addr}): {e}") from None
            table = faults.shapes.setdefault(end.device, {})
            if shaped(d):
                table[link.id] = {"ifname": ifname, "slot": link.index, "peer": other.addr, "direction": asdict(d)}
                rt.journal("remote-tc", f"{end.device}/{ifname}")
            else:
                table.pop(link.id, None)
            rt.remote_run(end.device, tc_command(ifname, faults.peer_shapes(end.device, ifname)))
            rt.save_fault_state(faults)

    def link_stats(self, rt: Any) -> dict[str, dict[str, Any]]:
        """The faults each link's ends carry (real links have no counters cnlab owns)."""
        faults = _remote(rt).fault_state()
        out: dict[str, dict[str, Any]] = {}
        for link in rt.plan.links:
            entry = {}
            for name, end in (("a", link.a), ("b", link.b)):
                shape = faults.shapes.get(end.device, {}).get(link.id)
                entry[name] = {
                    "device": end.device,
                    "down": link.id in faults.down.get(end.device, {}),
                    "ifname": shape["ifname"] if shape else None,
                    "egress": shape["direction"] if shape else None,
                }
            out[link.id] = entry
        return out

    def stats_table(self, stats: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
        cols = ["link", "end", "device", "nft drop", "interface", "egress netem"]
        rows = []
        for lid, s in stats.items():
            for end in ("a", "b"):
                e = s.get(end) or {}
                egress = e.get("egress") or {}
                default = asdict(Direction())
                shown = ", ".join(f"{k}={v}" for k, v in egress.items() if v != default.get(k))
                down = "yes" if e.get("down") else "no"
                rows.append([lid, end, str(e.get("device")), down, e.get("ifname") or "-", shown or "-"])
        return cols, rows


def _remote(rt: Any) -> RemoteRuntime:
    if not hasattr(rt, "remote_run"):
        raise RunError("the ssh shaper needs a remote testbed")
    return rt  # type: ignore[no-any-return]
