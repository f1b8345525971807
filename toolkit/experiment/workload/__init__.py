"""Workload models (pure plans of intended actions) and the asyncio engine that executes them."""

from __future__ import annotations

from ..model import Experiment
from .plan import Action, ObjectPlan, User, WorkloadPlan


def plan_workload(exp: Experiment, seed: int | None = None) -> WorkloadPlan:
    """The experiment's whole workload (warm-up included), seeded, load events applied."""
    from .cbpp import plan_cbpp
    from .constant import plan_constant

    seed = exp.seed if seed is None else seed
    nodes = list(exp.nodes)
    total_s = exp.warmup_s + exp.duration_s
    load = [(exp.warmup_s + e.at_s, float(e.params["factor"])) for e in exp.timeline if e.kind == "load"]
    if exp.workload.model == "cbpp":
        sites = {n: exp.topology.devices[n].site for n in nodes}
        return plan_cbpp(exp.workload, nodes, sites, seed, total_s, load)
    return plan_constant(exp.workload, nodes, seed, total_s, load)


__all__ = ["Action", "ObjectPlan", "User", "WorkloadPlan", "plan_workload"]
