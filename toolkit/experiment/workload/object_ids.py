"""Object ids on the nodes: a name the workload proposes becomes a per-creator id.

The P2Pvalue node derives the id of an object created with `{"id": NAME}` from its creator and the
name (node_images/p2pvalue/README.md, "Object ids"): NAME + "." + the first 16 hex digits of
sha256(CREATOR + "\\0" + NAME), CREATOR being the creator's address user@domain. The engine runs the
plan under these ids, so the history, observers and checks use the ids the nodes use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from .plan import WorkloadPlan


def node_object_id(creator_address: str, name: str) -> str:
    digest = hashlib.sha256(creator_address.encode() + b"\0" + name.encode()).hexdigest()
    return f"{name}.{digest[:16]}"


def with_node_ids(plan: WorkloadPlan, address: Callable[[str], str]) -> tuple[WorkloadPlan, dict[str, str]]:
    """The plan with every object named by its node id (`address(user)` is a user's user@domain),
    and each node id's proposed name. Objects created by the workload take their creator from the
    create action."""
    creators = {o.id: o.creator for o in plan.objects}
    creators.update({a.object: a.user for a in plan.actions if a.kind == "create"})
    ids = {name: node_object_id(address(creator), name) for name, creator in creators.items()}
    new = replace(
        plan,
        objects=[replace(o, id=ids[o.id]) for o in plan.objects],
        actions=[replace(a, object=ids.get(a.object, a.object)) for a in plan.actions],
    )
    return new, {oid: name for name, oid in ids.items()}
