"""A fixed rate of a chosen action mix (Poisson arrivals), for benchmarks: `users_per_node`
users on every node, `objects` shared objects whose participants live on `span` nodes."""

from __future__ import annotations

import random

from ..schema import ConstantWorkload
from .plan import MARKED, Action, ObjectPlan, User, WorkloadPlan, apply_load, uid_for


def plan_constant(
    spec: ConstantWorkload,
    nodes: list[str],
    seed: int,
    total_s: float,
    load: list[tuple[float, float]] | None = None,
    prefix: str = "",
) -> WorkloadPlan:
    rng = random.Random(seed)
    users: dict[str, User] = {}
    by_node: dict[str, list[str]] = {}
    for n in nodes:
        for k in range(spec.users_per_node):
            name = f"{n}-u{k}"
            users[name] = User(name, n)
            by_node.setdefault(n, []).append(name)
    objects: list[ObjectPlan] = []
    for i in range(spec.objects):
        span = rng.sample(nodes, min(spec.span, len(nodes)))
        members = [u for n in span for u in by_node[n]]
        objects.append(ObjectPlan(f"{prefix}c{i}", members[0], tuple(members)))
    kinds = [k for k in spec.mix if k not in ("create", "add_participant")] or ["set_key"]
    weights = [spec.mix[k] for k in kinds]
    actions: list[Action] = []
    t, seq = 0.0, 0
    while True:
        t += rng.expovariate(spec.rate_per_s)
        if t >= total_s:
            break
        obj = objects[rng.randrange(len(objects))]
        user = obj.participants[rng.randrange(len(obj.participants))]
        kind = rng.choices(kinds, weights)[0]
        actions.append(Action(seq, t, kind, user, obj.id, uid_for(seq) if kind in MARKED else None))
        seq += 1
    actions = apply_load(actions, load or [], rng, seq)
    return WorkloadPlan(
        users=users, objects=objects, actions=actions, info={"model": "constant", "rate_per_s": spec.rate_per_s}
    )
