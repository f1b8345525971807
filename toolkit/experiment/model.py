"""The validated experiment: plain dataclasses the planners and the runner read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..topology.model import Topology
from .schema import CbppWorkload, ConstantWorkload, FederationOverrides


@dataclass(frozen=True)
class TimelineEvent:
    """One fault or load change, with its planned time in seconds after the warm-up."""

    index: int
    name: str
    kind: str  # partition, heal, link, node, device, load
    at_s: float
    params: dict[str, Any]
    line: int = field(default=0, compare=False)  # where the event is in the experiment file (1-based)
    col: int = field(default=0, compare=False)

    def describe(self) -> str:
        p = self.params
        if self.kind == "partition":
            return "partition " + " | ".join("+".join(g) if isinstance(g, list) else g for g in p["groups"])
        if self.kind == "heal":
            return "heal"
        if self.kind == "link":
            what = f"up={p['up']}" if p.get("up") is not None else ", ".join(f"{k}={v}" for k, v in p["set"].items())
            return f"link {p['between'][0]}-{p['between'][1]} {what}"
        if self.kind in ("node", "device"):
            return f"{self.kind} {p['device']} {p['action']}"
        return f"load x{p['factor']}"


@dataclass(frozen=True)
class Check:
    """A named assertion: a result `metric` (with `args`) or a PromQL query compared to a value."""

    name: str
    op: str
    value: float
    metric: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    promql: str | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    source: Path
    description: str
    topology: Topology
    topology_ref: str
    federation: FederationOverrides
    seed: int
    duration_s: float
    warmup_s: float
    quiesce_s: float
    workload: CbppWorkload | ConstantWorkload
    timeline: tuple[TimelineEvent, ...]
    checks: tuple[Check, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The devices that run a node."""
        fed = self.topology.federation
        return fed.devices if fed else tuple(self.topology.devices)

    def with_seed(self, seed: int) -> Experiment:
        from dataclasses import replace

        return replace(self, seed=seed)
