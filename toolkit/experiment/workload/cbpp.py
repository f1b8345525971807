"""P2Pvalue's agent-based model of participation in commons-based peer production, as a seeded,
time-compressed plan of actions against a federation.

From the project's model (DESIGN.md, Background): users are core members, occasional
contributors or consumers (1 : 9 : 90 by default; 5/45/450 of 500 users); each week every user
has a time budget (core 1-40 h, occasional 1-20 h; consumers, who mostly read, 0-2 h here); roles
change with a small probability per week (0.005: consumer -> occasional, occasional -> core). The
reverse moves (occasional -> consumer, core -> occasional) are not in the source; their rates
follow from detailed balance so that the shares stay where they started over a long run.

What we add to make it a workload: each user has an engagement drawn once from a Pareto
distribution (shape `engagement_alpha`), which scales the weekly budget inside the role's range, so
activity per user is heavy-tailed as in CBPP communities; users live on a home node; projects
have a home site, and a share `local_affinity` of their members come from it, the rest from
anywhere, so cross-domain traffic follows community membership. A project holds collaborative
objects whose participants are its members. One model week lasts `week_s` seconds.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

from ..schema import CbppWorkload
from .plan import MARKED, Action, ObjectPlan, User, WorkloadPlan, apply_load, uid_for

ROLES = ("core", "occasional", "consumer")

# what a user of each role does with an hour (shares of actions)
MIX: dict[str, dict[str, float]] = {
    "core": {
        "set_key": 0.28,
        "edit_text": 0.25,
        "append": 0.2,
        "create": 0.04,
        "add_participant": 0.03,
        "read": 0.14,
        "subscribe": 0.06,
    },
    "occasional": {"set_key": 0.3, "edit_text": 0.2, "append": 0.2, "create": 0.02, "read": 0.2, "subscribe": 0.08},
    "consumer": {"read": 0.6, "subscribe": 0.3, "set_key": 0.05, "append": 0.05},
}


def role_counts(users: int, shares: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split `users` by shares, largest remainders first; every role gets at least one user."""
    total = sum(shares)
    raw = [users * s / total for s in shares]
    counts = [max(1, int(x)) for x in raw]
    order = sorted(range(3), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(counts) < users:
        counts[order[i % 3]] += 1
        i += 1
    while sum(counts) > users:
        j = max(range(3), key=lambda k: counts[k])
        counts[j] -= 1
    return counts[0], counts[1], counts[2]


def transition_rates(p: float, shares: tuple[float, float, float]) -> dict[tuple[str, str], float]:
    """Per-week role changes: p for consumer->occasional and occasional->core (the source's
    0.005), the reverse moves at the rates that keep the shares stationary (detailed balance)."""
    core, occ, cons = shares
    return {
        ("consumer", "occasional"): p,
        ("occasional", "consumer"): p * cons / occ if occ else 0.0,
        ("occasional", "core"): p,
        ("core", "occasional"): p * occ / core if core else 0.0,
    }


class Community:
    """The model's state, advanced one week at a time (pure; driven by a seeded Random)."""

    def __init__(self, spec: CbppWorkload, nodes: list[str], site_of: dict[str, str | None], rng: random.Random):
        self.spec, self.rng = spec, rng
        counts = role_counts(spec.users, spec.shares)
        roles = [r for r, n in zip(ROLES, counts, strict=True) for _ in range(n)]
        rng.shuffle(roles)
        self.role: dict[str, str] = {}
        self.engagement: dict[str, float] = {}
        self.users: dict[str, User] = {}
        width = len(str(spec.users))
        for i, role in enumerate(roles):
            name = f"user{i:0{width}d}"
            self.role[name] = role
            self.engagement[name] = rng.paretovariate(spec.engagement_alpha)
            self.users[name] = User(name, nodes[rng.randrange(len(nodes))], role)
        self.rates = transition_rates(spec.role_change_per_week, spec.shares)
        self.projects = self._projects(nodes, site_of)

    def _projects(self, nodes: list[str], site_of: dict[str, str | None]) -> list[list[str]]:
        spec, rng = self.spec, self.rng
        n = spec.projects or max(1, spec.users // 10)
        home_site = [site_of.get(nodes[rng.randrange(len(nodes))]) for _ in range(n)]
        members: list[list[str]] = [[] for _ in range(n)]
        by_site: dict[str | None, list[int]] = {}
        for i, s in enumerate(home_site):
            by_site.setdefault(s, []).append(i)
        # core members first, so every project gets a core or occasional owner where possible
        order = sorted(self.users, key=lambda u: (ROLES.index(self.role[u]), u))
        for k, u in enumerate(order):
            joins = spec.projects_per_core if self.role[u] == "core" else 1
            for _ in range(joins):
                if k < n and not members[k]:  # seed each project with one of the first (core) users
                    p = k
                else:
                    local = by_site.get(site_of.get(self.users[u].node), [])
                    pool = local if local and rng.random() < spec.local_affinity else list(range(n))
                    pool = [i for i in pool if len(members[i]) < spec.max_members and u not in members[i]] or [
                        i for i in range(n) if len(members[i]) < spec.max_members and u not in members[i]
                    ]
                    if not pool:
                        break
                    p = pool[rng.randrange(len(pool))]
                members[p].append(u)
        return members

    def weekly_hours(self, user: str) -> float:
        lo, hi = {
            "core": self.spec.core_hours,
            "occasional": self.spec.occasional_hours,
            "consumer": self.spec.consumer_hours,
        }[self.role[user]]
        typical = lo + (hi - lo) / 8  # the budget of an engagement-1 user
        return min(hi, max(lo, typical * self.engagement[user] * self.rng.uniform(0.5, 1.5)))

    def change_roles(self) -> None:
        for u in sorted(self.role):
            r = self.role[u]
            for (src, dst), p in self.rates.items():
                if src == r and self.rng.random() < p:
                    self.role[u] = dst
                    break

    def shares(self) -> dict[str, float]:
        c = Counter(self.role.values())
        return {r: c[r] / len(self.role) for r in ROLES}


def plan_cbpp(
    spec: CbppWorkload,
    nodes: list[str],
    site_of: dict[str, str | None],
    seed: int,
    total_s: float,
    load: list[tuple[float, float]] | None = None,
    prefix: str = "",
) -> WorkloadPlan:
    """Every action of `total_s` seconds of the model (weeks of `week_s`), seeded."""
    rng = random.Random(seed)
    com = Community(spec, nodes, site_of, rng)
    objects: list[ObjectPlan] = []
    participants: dict[str, list[str]] = {}
    creator: dict[str, str] = {}
    project_objects: list[list[str]] = [[] for _ in com.projects]
    for p, members in enumerate(com.projects):
        for k in range(spec.objects_per_project if members else 0):
            oid = f"{prefix}p{p}o{k}"
            owner = members[0]
            objects.append(ObjectPlan(oid, owner, tuple(members), p))
            participants[oid], creator[oid] = list(members), owner
            project_objects[p].append(oid)
    next_obj = [spec.objects_per_project] * len(com.projects)
    user_objects: dict[str, list[str]] = {}
    for oid, parts in participants.items():
        for u in parts:
            user_objects.setdefault(u, []).append(oid)
    actions: list[Action] = []
    ready_at: dict[str, float] = {}
    seq = 0
    weeks = max(1, math.ceil(total_s / spec.week_s))
    shares_by_week: list[dict[str, float]] = []
    for week in range(weeks):
        shares_by_week.append(com.shares())
        start = week * spec.week_s
        week_actions: list[tuple[float, str, str]] = []
        for u in sorted(com.users):
            n = _poisson(rng, com.weekly_hours(u) * spec.actions_per_hour)
            mix = MIX[com.role[u]]
            kinds, weights = list(mix), list(mix.values())
            for _ in range(n):
                week_actions.append((start + rng.random() * spec.week_s, u, rng.choices(kinds, weights)[0]))
        week_actions.sort()
        for at, u, kind in week_actions:
            if at >= total_s:
                continue
            # a new object is used a model day after its creation (it has to exist, and reach other nodes)
            mine = [o for o in user_objects.get(u, []) if ready_at.get(o, 0.0) <= at]
            if not mine:
                continue
            oid = mine[rng.randrange(len(mine))]
            args: dict[str, Any] = {}
            if kind == "create":
                p = next(i for i, objs in enumerate(project_objects) if oid in objs)
                new = f"{prefix}p{p}o{next_obj[p]}"
                next_obj[p] += 1
                members = [m for m in com.projects[p] if m != u]
                args = {"participants": members}
                participants[new], creator[new] = [u, *members], u
                ready_at[new] = at + spec.week_s / 7
                project_objects[p].append(new)
                for m in participants[new]:
                    user_objects.setdefault(m, []).append(new)
                oid = new
            elif kind == "add_participant":
                owned = [o for o in mine if creator[o] == u and len(participants[o]) < spec.max_members]
                outsiders = [x for x in com.users if x not in participants.get(owned[0], [])] if owned else []
                if not owned or not outsiders:
                    kind = "set_key"
                else:
                    oid = owned[rng.randrange(len(owned))]
                    outsiders = [x for x in com.users if x not in participants[oid]]
                    other_node = [x for x in outsiders if com.users[x].node != com.users[u].node] or outsiders
                    new_member = other_node[rng.randrange(len(other_node))]
                    args = {"user": new_member}
                    participants[oid].append(new_member)
                    user_objects.setdefault(new_member, []).append(oid)
            actions.append(Action(seq, at, kind, u, oid, uid_for(seq) if kind in MARKED else None, args))
            seq += 1
        com.change_roles()
    actions = apply_load(actions, load or [], rng, seq)
    users = {u: User(u, com.users[u].node, com.role[u]) for u in com.users}
    initial_roles = Counter(x.role for x in com.users.values())
    info = {
        "model": "cbpp",
        "weeks": weeks,
        "initial_roles": dict(initial_roles),
        "final_roles": dict(Counter(com.role.values())),
        "shares_by_week": shares_by_week,
        "projects": len(com.projects),
        "objects_at_start": len(objects),
    }
    return WorkloadPlan(users=users, objects=objects, actions=actions, info=info)


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method for small means, a rounded normal for large ones."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
