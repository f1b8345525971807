"""The workload models, pure: seeded reproducibility, and the cbpp model's role shares and heavy
tail over a simulated year (no network)."""

from __future__ import annotations

import collections
import statistics

from toolkit.experiment.schema import CbppWorkload, ConstantWorkload
from toolkit.experiment.workload.cbpp import plan_cbpp, role_counts
from toolkit.experiment.workload.constant import plan_constant
from toolkit.experiment.workload.plan import MARKED
from toolkit.experiment.workload.stats import gini, powerlaw_fit

NODES = [f"n{i}" for i in range(12)]
SITES = {n: ("west" if i < 6 else "east") for i, n in enumerate(NODES)}


def test_the_same_seed_gives_the_same_actions_and_another_seed_does_not():
    spec = CbppWorkload(model="cbpp", users=60, week_s=5)
    a = plan_cbpp(spec, NODES, SITES, seed=3, total_s=30).log_lines()
    b = plan_cbpp(spec, NODES, SITES, seed=3, total_s=30).log_lines()
    c = plan_cbpp(spec, NODES, SITES, seed=4, total_s=30).log_lines()
    assert a == b and len(a) > 50
    assert a != c
    k = plan_constant(ConstantWorkload(model="constant", rate_per_s=20), NODES, seed=3, total_s=10)
    assert k.log_lines() == plan_constant(ConstantWorkload(model="constant", rate_per_s=20), NODES, 3, 10).log_lines()
    assert 120 < len(k.actions) < 280  # Poisson with mean 200


def test_default_population_is_5_45_450_and_every_write_has_a_unique_id():
    assert role_counts(500, (1, 9, 90)) == (5, 45, 450)
    assert role_counts(50, (1, 9, 90)) == (1, 4, 45) or sum(role_counts(50, (1, 9, 90))) == 50
    plan = plan_cbpp(CbppWorkload(model="cbpp"), NODES, SITES, seed=1, total_s=120)
    assert plan.info["initial_roles"] == {"core": 5, "occasional": 45, "consumer": 450}
    uids = [a.uid for a in plan.actions if a.kind in MARKED]
    assert all(uids) and len(set(uids)) == len(uids)
    assert all(a.uid is None for a in plan.actions if a.kind not in MARKED)


def test_projects_span_nodes_and_follow_their_home_site():
    plan = plan_cbpp(CbppWorkload(model="cbpp", users=500), NODES, SITES, seed=2, total_s=60)
    spans = [len(plan.nodes_of(o.participants)) for o in plan.objects]
    assert statistics.mean(spans) > 2  # cross-domain collaboration
    same_site = []
    for o in plan.objects:
        sites = collections.Counter(SITES[plan.users[u].node] for u in o.participants)
        same_site.append(sites.most_common(1)[0][1] / len(o.participants))
    assert statistics.mean(same_site) > 0.6  # local affinity 0.6 plus chance


def test_a_simulated_year_keeps_the_role_shares_and_has_a_heavy_tail():
    spec = CbppWorkload(model="cbpp", users=5000, week_s=1, actions_per_hour=0.2)
    plan = plan_cbpp(spec, NODES, SITES, seed=11, total_s=52)
    weeks = plan.info["shares_by_week"]
    assert len(weeks) == 52
    mean = {r: statistics.mean(w[r] for w in weeks) for r in ("core", "occasional", "consumer")}
    assert abs(mean["core"] - 0.01) < 0.004 and abs(mean["occasional"] - 0.09) < 0.015
    assert abs(mean["consumer"] - 0.90) < 0.015
    # roles did change (0.005 per week and the balancing moves back)
    assert plan.info["final_roles"] != plan.info["initial_roles"]

    writes = collections.Counter(a.user for a in plan.actions if a.kind in MARKED)
    contributions = [writes.get(u, 0) for u in plan.users]
    g = gini(contributions)
    fit = powerlaw_fit(contributions)
    assert g is not None and g > 0.7, g  # a few do most of the work
    assert fit is not None and 1.5 < fit["alpha"] < 3.5 and fit["n_tail"] >= 50, fit
    top1 = sorted(contributions, reverse=True)[: len(contributions) // 100]
    assert sum(top1) / sum(contributions) > 0.1  # the top 1% do more than a tenth


def test_gini_and_powerlaw_on_known_inputs():
    assert gini([1, 1, 1, 1]) == 0
    assert abs(gini([0, 0, 0, 1]) - 0.75) < 1e-9
    assert gini([]) is None
    import random

    rng = random.Random(5)
    xs = [int(rng.paretovariate(1.5)) for _ in range(5000)]  # density exponent 2.5
    fit = powerlaw_fit(xs)
    assert fit is not None and 2.2 < fit["alpha"] < 2.8, fit


def test_a_load_event_scales_the_arrival_rate():
    spec = ConstantWorkload(model="constant", rate_per_s=50)
    plan = plan_constant(spec, NODES, seed=1, total_s=20, load=[(10.0, 3.0)])
    before = sum(1 for a in plan.actions if a.at_s < 10)
    after = sum(1 for a in plan.actions if a.at_s >= 10)
    assert 2.4 < after / before < 3.6
    uids = [a.uid for a in plan.actions if a.uid]
    assert len(set(uids)) == len(uids)


def test_the_engine_runs_the_plan_under_the_ids_the_nodes_derive():
    """The nodes derive an object's id from its creator and the proposed name (issue 10 item 20): the
    toolkit's derivation is the node's, and every object and action of a plan is renamed alike."""
    from p2pvalue_node.documents import object_id_for

    from toolkit.experiment.workload.object_ids import node_object_id, with_node_ids

    assert node_object_id("alice@n1.x", "p0o1") == object_id_for("alice@n1.x", "p0o1")
    plan = plan_cbpp(CbppWorkload(model="cbpp", users=60, week_s=5), NODES, SITES, seed=3, total_s=30)
    created = {a.object: a.user for a in plan.actions if a.kind == "create"}
    assert created, "the plan creates objects during the workload"
    renamed, names = with_node_ids(plan, lambda u: f"{u}@{plan.users[u].node}.test")
    creators = {o.id: o.creator for o in plan.objects} | created
    for before, after in zip(plan.objects, renamed.objects, strict=True):
        assert after.id == object_id_for(f"{before.creator}@{plan.users[before.creator].node}.test", before.id)
        assert names[after.id] == before.id and after.participants == before.participants
    for before, after in zip(plan.actions, renamed.actions, strict=True):
        creator = creators[before.object]
        assert after.object == object_id_for(f"{creator}@{plan.users[creator].node}.test", before.object)
        assert after.seq == before.seq and after.kind == before.kind
