"""The workload as plain data: who exists, which objects exist at the start, and every intended
action with its time. Models (cbpp, constant) build a `WorkloadPlan` from a seed; the engine
executes it. The same seed gives the same plan, action for action."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

WRITES = ("create", "edit_text", "set_key", "append", "add_participant")
MARKED = ("create", "edit_text", "set_key", "append")  # writes that leave a unique id in the document


def uid_for(seq: int) -> str:
    """The unique mark a write leaves in the document (a map key, list item or text run).
    Observers find it in raw Yjs updates with UID_PATTERN, so it must stay ASCII and distinctive."""
    return f"cx{seq:07d}"


UID_PATTERN = rb"cx[0-9]{7}"


@dataclass(frozen=True)
class User:
    name: str
    node: str  # home device
    role: str = "member"  # cbpp: core, occasional, consumer


@dataclass(frozen=True)
class ObjectPlan:
    id: str
    creator: str  # user name
    participants: tuple[str, ...]  # user names, creator included
    project: int = 0


@dataclass(frozen=True)
class Action:
    seq: int
    at_s: float  # seconds after the workload starts (warm-up included)
    kind: str  # create, edit_text, set_key, append, add_participant, read, subscribe
    user: str
    object: str
    uid: str | None = None  # writes only
    args: dict[str, Any] = field(default_factory=dict)  # create: participants; add_participant: user

    @property
    def is_write(self) -> bool:
        return self.kind in WRITES

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["at_s"] = round(self.at_s, 6)
        return d


@dataclass
class WorkloadPlan:
    users: dict[str, User]
    objects: list[ObjectPlan]  # created before the workload starts
    actions: list[Action]
    info: dict[str, Any] = field(default_factory=dict)  # model facts: roles per week, engagement, ...

    def nodes_of(self, participants: tuple[str, ...] | list[str]) -> set[str]:
        return {self.users[u].node for u in participants}

    def log_lines(self) -> list[str]:
        """The intended actions, one JSON line each (what the reproducibility test compares)."""
        return [json.dumps(a.to_json(), sort_keys=True) for a in self.actions]


def apply_load(
    actions: list[Action], segments: list[tuple[float, float]], rng: random.Random, next_seq: int
) -> list[Action]:
    """Change the arrival rate from each (start_s, factor) on: thin (factor < 1) or clone
    (factor > 1, clones jittered by up to a second and given their own uids). Pure and seeded."""
    if not segments:
        return actions
    segments = sorted(segments)
    out: list[Action] = []
    seq = next_seq
    for a in actions:
        factor = 1.0
        for start, f in segments:
            if a.at_s >= start:
                factor = f
        copies = int(factor) + (1 if rng.random() < factor - int(factor) else 0)
        if a.kind in ("create", "add_participant"):
            copies = 1  # later actions depend on these: never dropped, never repeated
        for k in range(copies):
            if k == 0:
                out.append(a)
                continue
            at = a.at_s + rng.random()
            out.append(
                Action(seq, at, a.kind, a.user, a.object, uid_for(seq) if a.kind in MARKED else None, dict(a.args))
            )
            seq += 1
    out.sort(key=lambda x: (x.at_s, x.seq))
    return out
